# The launch environment: torchrun/DeepSpeed, OpenMPI and Slurm variables.
dspp_add_test(test_launch_env SOURCES test_launch_env.cpp)
