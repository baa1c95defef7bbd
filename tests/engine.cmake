dspp_add_test(test_engine SOURCES test_engine.cpp)

# The README example trains: its last loss must be below its first (it prints both).
add_test(NAME example_train_gpt
         COMMAND sh -c "$<TARGET_FILE:example_train_gpt> 40 | awk '{print $4}' | tr '\\n' ' ' | awk '{exit !($2 < $1 - 0.3)}'")
