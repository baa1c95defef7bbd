# The plugin registry: test plugin libraries, the Catch2 tests, and the install + find_package test.
set(DSPP_TP_DIR "${CMAKE_CURRENT_BINARY_DIR}/test_plugins")

# Well-formed libraries live in good/, each broken one alone in bad/ (tests load them by path).
dspp_add_plugin(dspp_tp_good KIND scheduler NAME testconst
  SOURCES test_plugins/good.cpp OUTPUT_DIR "${DSPP_TP_DIR}/good")
dspp_add_plugin(dspp_tp_throwing KIND optimizer NAME testbroken
  SOURCES test_plugins/throwing.cpp OUTPUT_DIR "${DSPP_TP_DIR}/good")
dspp_add_plugin(dspp_tp_wrong_abi KIND scheduler NAME wrongabi
  SOURCES test_plugins/wrong_abi.cpp OUTPUT_DIR "${DSPP_TP_DIR}/bad")
dspp_add_plugin(dspp_tp_no_entry KIND scheduler NAME noentry
  SOURCES test_plugins/no_entry.cpp OUTPUT_DIR "${DSPP_TP_DIR}/bad")
# A plugin that needs another library, in dep/lib/ (the plugin finds it through $ORIGIN/lib).
add_library(dspp_tp_dep SHARED test_plugins/dep.cpp)
set_target_properties(dspp_tp_dep PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${DSPP_TP_DIR}/dep/lib"
                                             OUTPUT_NAME dspp_tp_dep)
dspp_add_plugin(dspp_tp_needs_dep KIND scheduler NAME needsdep
  SOURCES test_plugins/needs_dep.cpp LIBS dspp_tp_dep OUTPUT_DIR "${DSPP_TP_DIR}/dep")
# Exactly $ORIGIN/lib, not the build tree path CMake would add: a copy must not find the original.
set_target_properties(dspp_tp_needs_dep PROPERTIES INSTALL_RPATH "$ORIGIN/lib" BUILD_WITH_INSTALL_RPATH ON)
set(DSPP_TP_TARGETS dspp_tp_good dspp_tp_throwing dspp_tp_wrong_abi dspp_tp_no_entry dspp_tp_dep
    dspp_tp_needs_dep)
# bad_descriptor.cpp breaks its descriptor in the way TEST_CASE_ID names (1..5, this order).
set(id 0)
foreach(case desc_major desc_minor unknown_kind no_destroy zero_old)
  math(EXPR id "${id} + 1")
  dspp_add_plugin(dspp_tp_${case} KIND scheduler NAME ${case}
    SOURCES test_plugins/bad_descriptor.cpp OUTPUT_DIR "${DSPP_TP_DIR}/bad")
  target_compile_definitions(dspp_tp_${case} PRIVATE TEST_CASE_ID=${id})
  list(APPEND DSPP_TP_TARGETS dspp_tp_${case})
endforeach()

dspp_add_test(test_plugins SOURCES test_plugins_registry.cpp test_plugins_host.cpp)
add_dependencies(test_plugins ${DSPP_TP_TARGETS})
foreach(t ${DSPP_TP_TARGETS})
  string(TOUPPER "${t}" var)
  target_compile_definitions(test_plugins PRIVATE "${var}=\"$<TARGET_FILE:${t}>\"")
endforeach()

# Install into a scratch prefix, build the out-of-tree examples against it with find_package(dspp),
# and run the installed tools and the host app from a moved copy of the prefix.
add_test(NAME plugins_install
  COMMAND bash "${CMAKE_CURRENT_SOURCE_DIR}/install_test.sh" "${PROJECT_BINARY_DIR}"
          "${PROJECT_SOURCE_DIR}" "${CMAKE_CURRENT_BINARY_DIR}/install_test")
set_tests_properties(plugins_install PROPERTIES TIMEOUT 600 LABELS "install")
