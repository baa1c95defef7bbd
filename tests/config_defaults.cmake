# The core key table against DeepSpeed 0.19: defaults, spellings, support levels, and real
# projects' configs resolved to the same batch triple as DeepSpeed.
dspp_add_test(test_config_defaults SOURCES test_config_defaults.cpp)

# ds-config check on real configs vs. the triples DeepSpeed computed
# (scripts/reference/batch_triples.py -> tests/data/real_config_triples.json).
if(TARGET ds-config)
  add_test(NAME config_defaults_real_triples
    COMMAND ${CMAKE_COMMAND}
      -DDS_CONFIG=$<TARGET_FILE:ds-config>
      -DTRIPLES=${CMAKE_CURRENT_SOURCE_DIR}/data/real_config_triples.json
      -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
      -P ${CMAKE_CURRENT_SOURCE_DIR}/cmake/check_real_triples.cmake)
endif()
