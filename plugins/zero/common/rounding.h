// Rounding fp32 values to the 16-bit types of mixed precision, kept as fp32 (the CPU kernels
// compute in fp32; the values are exactly representable in the 16-bit type). Used by the ZeRO
// stages for the working copy of the parameters and for gradients before their reduction.
#pragma once

#include <dspp/abi.h>
#include <dspp/plugin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace dspp::zero_common {

using plugin::StatusError;

// x rounded to the nearest bf16 (ties to even), returned as a float. NaN stays NaN; values past
// bf16's largest finite round to inf as a cast would.
inline float round_bf16(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7f800000u) == 0x7f800000u) return x;  // inf or NaN: unchanged (no carry into sign)
  // Add half an ulp of the 16 kept bits, plus one when the kept part is odd (ties to even), then
  // drop the 16 low bits; a carry into the exponent is the correct rounding up.
  b += 0x7fffu + ((b >> 16) & 1u);
  b &= 0xffff0000u;
  std::memcpy(&x, &b, 4);
  return x;
}

// x rounded to the nearest fp16 (ties to even), as a float: 11 significant bits for normal
// values, a fixed quantum of 2^-24 below 2^-14 (subnormals), inf beyond 65504 (as a cast to
// half gives: 65520 and up round to 2^16, which fp16 cannot hold).
inline float round_fp16(float x) {
  if (!std::isfinite(x)) return x;
  const float a = std::fabs(x);
  if (a < 6.103515625e-05f) {  // 2^-14: fp16's subnormal range, multiples of 2^-24
    // x * 2^24 is exact (a power-of-two scale) and below 2^10, so nearbyint (ties to even in
    // the default rounding mode) rounds at the right place; the product back is exact too.
    return std::nearbyint(x * 16777216.0f) * 5.9604644775390625e-08f;
  }
  uint32_t b;
  std::memcpy(&b, &x, 4);
  b += 0xfffu + ((b >> 13) & 1u);  // keep 10 of float's 23 mantissa bits, ties to even
  b &= 0xffffe000u;
  std::memcpy(&x, &b, 4);
  if (std::fabs(x) > 65504.0f) return std::copysign(INFINITY, x);
  return x;
}

// Rounds n floats in place to `dtype` (DSPP_F16 or DSPP_BF16; DSPP_F32 leaves them).
inline void round_to(float* p, int64_t n, int32_t dtype) {
  if (dtype == DSPP_F16) {
    for (int64_t i = 0; i < n; ++i) p[i] = round_fp16(p[i]);
  } else if (dtype == DSPP_BF16) {
    for (int64_t i = 0; i < n; ++i) p[i] = round_bf16(p[i]);
  }
}

// dst = src rounded to `dtype`.
inline void round_copy(float* dst, const float* src, int64_t n, int32_t dtype) {
  if (dtype == DSPP_F16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = round_fp16(src[i]);
  } else if (dtype == DSPP_BF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = round_bf16(src[i]);
  } else if (dst != src) {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  }
}

inline bool mixed(int32_t working_dtype) {
  return working_dtype == DSPP_F16 || working_dtype == DSPP_BF16;
}

inline void check_working_dtype(int32_t dtype, const char* stage) {
  if (dtype != DSPP_F32 && !mixed(dtype)) {
    throw StatusError(DSPP_ERR_INVALID_ARGUMENT, std::string(stage) + ": working_dtype " +
                                                     std::to_string(dtype) +
                                                     " is not fp32, fp16 or bf16");
  }
}

}  // namespace dspp::zero_common
