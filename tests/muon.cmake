# optimizer/muon and flagger/muon against tests/data/muon.json (scripts/reference/muon.py).
find_package(OpenMP COMPONENTS CXX)
set(DSPP_MUON_TEST_PLUGINS dspp_optimizer_muon dspp_flagger_muon)
set(_muon_test_libs)
if(OpenMP_CXX_FOUND)
  list(APPEND _muon_test_libs OpenMP::OpenMP_CXX)  # to vary the plugin's thread count
endif()
dspp_add_test(test_muon SOURCES test_muon.cpp LIBS ${_muon_test_libs})
add_dependencies(test_muon ${DSPP_MUON_TEST_PLUGINS})
foreach(t ${DSPP_MUON_TEST_PLUGINS})
  string(TOUPPER "${t}" var)
  target_compile_definitions(test_muon PRIVATE "${var}_PATH=\"$<TARGET_FILE:${t}>\"")
endforeach()
