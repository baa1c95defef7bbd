# Fails when docs/config.md differs from what `ds-config docs` prints now.
#   cmake -DDS_CONFIG=<ds-config binary> -DDOC=<docs/config.md> -P check_config_md.cmake
execute_process(COMMAND "${DS_CONFIG}" docs OUTPUT_VARIABLE generated RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ds-config docs failed (exit ${rc})")
endif()
if(NOT EXISTS "${DOC}")
  message(FATAL_ERROR "${DOC} is missing: run `cmake --build build --target docs-config`")
endif()
file(READ "${DOC}" checked_in)
if(NOT generated STREQUAL checked_in)
  message(FATAL_ERROR "${DOC} is out of date with the config registry: run "
                      "`cmake --build build --target docs-config` and commit the result")
endif()
message(STATUS "${DOC} is current")
