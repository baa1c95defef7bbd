// 16-bit floats on the host for the tests' references: f32 -> bf16 / f16 rounded to nearest even
// (f16 with subnormals and overflow to infinity, as the compiler's _Float16 conversion does;
// checked equal to a bit-by-bit rounding for every non-NaN float), and back. Independent of the
// code under test (core and the plugins have their own conversions).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace half_bits {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t bf16_bits(float f) {
  const uint32_t u = bits_of(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x40u);  // a quiet NaN
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_value(uint16_t h) {
  return float_of(uint32_t(h) << 16);
}
inline uint16_t f16_bits(float f) {
  const _Float16 h = static_cast<_Float16>(f);  // the compiler's conversion: ties to even
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
inline float f16_value(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

}  // namespace half_bits
