# Tensors, modules, the CPU layer library and the MLP/GPT models (core/tensor, core/nn,
# core/models): gradient checks against float64 references, hooks, determinism.
find_package(OpenMP REQUIRED COMPONENTS CXX)
dspp_add_test(test_nn SOURCES test_tensor.cpp test_nn_layers.cpp test_nn_models.cpp test_philox.cpp
              LIBS OpenMP::OpenMP_CXX)
