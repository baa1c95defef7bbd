# Checkpoint storage (core/checkpoint): safetensors files, checksums, resharding reads, crash
# safety (a forked writer killed at each crash point), and the ds-checkpoint tool run as a binary.
dspp_add_test(test_checkpoint SOURCES test_checkpoint.cpp)
add_dependencies(test_checkpoint ds-checkpoint)
target_compile_definitions(test_checkpoint PRIVATE DS_CHECKPOINT_BIN="$<TARGET_FILE:ds-checkpoint>")
