# Checkpoint storage (core/checkpoint): safetensors files, checksums, resharding reads, crash
# safety (a forked writer killed at each crash point), and the ds-checkpoint tool run as a binary.
dspp_add_test(test_checkpoint SOURCES test_checkpoint.cpp)
add_dependencies(test_checkpoint ds-checkpoint)
target_compile_definitions(test_checkpoint PRIVATE DS_CHECKPOINT_BIN="$<TARGET_FILE:ds-checkpoint>")

# Engine checkpoints end to end: ds-train saves at one world size and ZeRO stage, resumes at others
# (equal to an uninterrupted run), survives a rank killed at each point of a save, refuses a
# corrupt shard.
dspp_add_test(test_checkpoint_train SOURCES test_checkpoint_train.cpp)
add_dependencies(test_checkpoint_train ds-train ds-checkpoint)
target_compile_definitions(test_checkpoint_train PRIVATE
  DS_CHECKPOINT_BIN="$<TARGET_FILE:ds-checkpoint>")
