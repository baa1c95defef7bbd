# dspp_add_plugin(<target> KIND <kind> NAME <name> SOURCES <src>... [LIBS <lib>...]
#                 [OUTPUT_DIR <dir>] [NO_INSTALL])
#
# Builds one plugin library: a MODULE linked against the SDK headers only (never libdspp), hidden
# visibility, exporting just its entry symbol. Used in-tree and, after find_package(dspp), by
# out-of-tree plugins.
#
# Built into OUTPUT_DIR when given, else (in-tree) lib/dspp/plugins/ of the dspp build tree.
# Installed into <prefix>/lib/dspp/plugins unless NO_INSTALL; in-tree, a plugin with its own
# OUTPUT_DIR is a test plugin and is not installed either.
set(_DSPP_PLUGIN_MAP "${CMAKE_CURRENT_LIST_DIR}/dspp_plugin.map")

function(dspp_add_plugin target)
  cmake_parse_arguments(P "NO_INSTALL" "KIND;NAME;OUTPUT_DIR" "SOURCES;LIBS" ${ARGN})
  if(NOT P_KIND OR NOT P_NAME OR NOT P_SOURCES)
    message(FATAL_ERROR "dspp_add_plugin(${target}): KIND, NAME and SOURCES are required")
  endif()
  add_library(${target} MODULE ${P_SOURCES})
  if(TARGET dspp_sdk)
    target_link_libraries(${target} PRIVATE dspp_sdk)
  else()
    target_link_libraries(${target} PRIVATE dspp::sdk)
  endif()
  if(P_LIBS)
    target_link_libraries(${target} PRIVATE ${P_LIBS})
  endif()
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME "dspp_${P_KIND}_${P_NAME}"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    LINK_DEPENDS "${_DSPP_PLUGIN_MAP}")
  target_link_options(${target} PRIVATE "LINKER:--version-script=${_DSPP_PLUGIN_MAP}"
                      "LINKER:--no-undefined")
  if(DEFINED DSPP_WARNINGS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DSPP_WARNINGS}>)
  endif()
  if(P_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${P_OUTPUT_DIR}")
  elseif(DEFINED DSPP_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${DSPP_PLUGIN_OUTPUT_DIR}")
    # A plugin dspp ships: part of the `runtime` target (everything but tests and benchmarks).
    set_property(GLOBAL APPEND PROPERTY DSPP_RUNTIME_TARGETS ${target})
  endif()
  # DSPP_PLUGIN_SUBDIR is relative (lib/dspp/plugins), so `cmake --install --prefix` is honoured;
  # dsppConfig.cmake sets it for out-of-tree builds.
  if(NOT P_NO_INSTALL AND NOT (P_OUTPUT_DIR AND DEFINED DSPP_PLUGIN_OUTPUT_DIR))
    install(TARGETS ${target} LIBRARY DESTINATION "${DSPP_PLUGIN_SUBDIR}")
  endif()
endfunction()
