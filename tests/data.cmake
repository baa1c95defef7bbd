# Datasets, the distributed sampler and the DataLoader, token files, the synthetic addition task.
dspp_add_test(test_data SOURCES test_data.cpp)
