# The ds-estimate tool (tools/ds-estimate): DeepSpeed's documented example, the formulas recomputed
# in float64, GPT counting against dspp::GPT, and usage errors. The test runs the binary.
dspp_add_test(test_ds_estimate SOURCES test_ds_estimate.cpp)
add_dependencies(test_ds_estimate ds-estimate)
target_compile_definitions(test_ds_estimate PRIVATE DS_ESTIMATE_BIN="$<TARGET_FILE:ds-estimate>")
