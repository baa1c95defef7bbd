# Mixed precision: the ZeRO stages' fp16/bf16 rounding and the engine's fp16 step (loss scaling,
# overflow skips, unscale and clip) against float64 references in one process; fp16/bf16 through
# ds-train at world 1 and 2 on every ZeRO stage (tracking fp32, injected overflows, checkpoints).
dspp_add_test(test_mixed_precision_unit SOURCES test_mixed_precision_unit.cpp)
add_dependencies(test_mixed_precision_unit dspp_zero_stage0 dspp_zero_stage1 dspp_zero_stage2
                 dspp_optimizer_sgd)
dspp_add_test(test_mixed_precision SOURCES test_mixed_precision.cpp)
add_dependencies(test_mixed_precision ds-train dspp_zero_stage0 dspp_zero_stage1 dspp_zero_stage2
                 dspp_zero_stage3 dspp_comm_gloo)
