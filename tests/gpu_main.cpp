// main() of the GPU test binaries: without a CUDA device they exit with 77, which CTest reports
// as skipped (SKIP_RETURN_CODE 77), so the same suite runs on CPU-only machines and on GPUs.
// Listing the tests (catch_discover_tests does at build time) works everywhere.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--list", 6) == 0) listing = true;
  }
  if (!listing) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
      std::printf("SKIP: no CUDA device (%s)\n",
                  err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
      return 77;
    }
  }
  return Catch::Session().run(argc, argv);
}
