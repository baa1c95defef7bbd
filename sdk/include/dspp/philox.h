// Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11):
// a counter-based random number generator. Each 128-bit counter gives four 32-bit words that
// depend only on the counter and a 64-bit key, so element i of a random tensor can be computed by
// any thread, on the host or on a GPU, in any order, and a stream can be resumed at any offset.
//
// dspp's element mapping (DeviceKernels::fill_uniform / fill_normal, version 4): element e of the
// stream of `seed` is lane e % 4 of the block philox4x32_10({lo(e / 4), hi(e / 4), 0, 0},
// {lo(seed), hi(seed)}). Header-only, plain C++17, and __host__ __device__ under nvcc, so the CUDA
// kernels and the host references compute the same words.
#ifndef DSPP_PHILOX_H
#define DSPP_PHILOX_H

#include <stdint.h>

#if defined(__CUDACC__)
#define DSPP_PHILOX_HD __host__ __device__ __forceinline__
#else
#define DSPP_PHILOX_HD inline
#endif

namespace dspp::philox {

struct Words {
  uint32_t w[4];
};

// The high and low 32 bits of a * b.
DSPP_PHILOX_HD void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox-4x32 on counter `c` with key (k0, k1), the key bumped by the Weyl
// constants between rounds.
DSPP_PHILOX_HD Words philox4x32_10(Words c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c.w[0], &hi0, &lo0);
    mulhilo(0xCD9E8D57u, c.w[2], &hi1, &lo1);
    c = Words{{hi1 ^ c.w[1] ^ k0, lo1, hi0 ^ c.w[3] ^ k1, lo0}};
  }
  return c;
}

// The block of element `e` of the stream of `seed` (its four lanes are elements 4 (e / 4) + 0..3).
DSPP_PHILOX_HD Words block_of(uint64_t seed, uint64_t e) {
  const uint64_t b = e >> 2;
  return philox4x32_10(Words{{static_cast<uint32_t>(b), static_cast<uint32_t>(b >> 32), 0u, 0u}},
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A word as a float in [0, 1): its top 24 bits times 2^-24 (exact in f32).
DSPP_PHILOX_HD float unit_float(uint32_t x) {
  return static_cast<float>(x >> 8) * 5.9604644775390625e-8f;
}

}  // namespace dspp::philox

#undef DSPP_PHILOX_HD
#endif  // DSPP_PHILOX_H
