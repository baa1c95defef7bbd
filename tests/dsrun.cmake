# dsrun, the launcher: unit tests of its hostfile/filter/command-line parts (test_dsrun.cpp), and
# real launches with a probe program (dsrun_test.sh): local ranks, failures, signals, --dry_run,
# usage errors, and two "hosts" over a real ssh to this machine (skipped without sshd).
dspp_add_test(test_dsrun SOURCES test_dsrun.cpp LIBS dsrun_lib)

add_executable(dsrun_probe dsrun_probe.cpp)
target_compile_options(dsrun_probe PRIVATE ${DSPP_WARNINGS})

foreach(mode env lines fail signals dry_run errors ssh)
  add_test(NAME dsrun:${mode}
           COMMAND bash "${CMAKE_CURRENT_SOURCE_DIR}/dsrun_test.sh" ${mode} $<TARGET_FILE:dsrun>
                   $<TARGET_FILE:dsrun_probe> "${CMAKE_CURRENT_BINARY_DIR}/dsrun_${mode}")
  # 77: the test could not run here (no sshd); CTest reports it as skipped, with the reason.
  set_tests_properties(dsrun:${mode} PROPERTIES TIMEOUT 60 SKIP_RETURN_CODE 77)
endforeach()
