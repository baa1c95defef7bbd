# Config registry tests: the rules (test_config_registry), DeepSpeed's batch rule
# (test_config_batch), the ways a config arrives and what it hands out (test_config_load), and the
# ds-config command line (test_config_tool).
dspp_add_test(test_config SOURCES
  test_config_registry.cpp
  test_config_batch.cpp
  test_config_load.cpp
  test_config_tool.cpp)
# test_config_tool runs the ds-config binary.
add_dependencies(test_config ds-config)
target_compile_definitions(test_config PRIVATE DS_CONFIG_BIN="$<TARGET_FILE:ds-config>")

# docs/config.md must match what the registry generates now.
add_test(NAME docs_config_current
  COMMAND ${CMAKE_COMMAND} -DDS_CONFIG=$<TARGET_FILE:ds-config>
          -DDOC=${PROJECT_SOURCE_DIR}/docs/config.md
          -P ${PROJECT_SOURCE_DIR}/docs/check_config_md.cmake)
