// comm/gloo: element types and the element-wise reductions the collectives use.
//
// f16 and bf16 are reduced through float: widen both operands, combine in float, round back to
// nearest even. float has 24 significant bits, at least 2p+2 for both half formats (p = 11 and 8),
// so the double rounding (float, then half) gives the correctly rounded half result of +, / and
// the exact max/min. Integer sums wrap (two's complement) instead of overflowing.
#pragma once

#include <dspp/abi.h>
#include <dspp/kinds/comm.h>

#include "../../common/comm_types.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace dspp_gloo {

using dspp::comm_types::dtype_info;
using dspp::comm_types::DtypeInfo;
using dspp::comm_types::op_name;

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Bf16 {
  static float to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }
  static uint16_t from_float(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return static_cast<uint16_t>(u >> 16);
  }
};

struct F16 {
  static float to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu;
    uint32_t m = h & 0x3FFu;
    if (e == 0x1F) return bits_float(sign | 0x7F800000u | (m << 13));  // inf, NaN
    if (e == 0) {
      if (m == 0) return bits_float(sign);
      e = 113;  // subnormal: normalise (2^-14 is exponent 113 - 127)
      while (!(m & 0x400u)) {
        m <<= 1;
        --e;
      }
      return bits_float(sign | (e << 23) | ((m & 0x3FFu) << 13));
    }
    return bits_float(sign | ((e + 112) << 23) | (m << 13));
  }
  static uint16_t from_float(float f) {
    const uint32_t x = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00u;   // NaN
    if (ax >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to infinity
    if (ax < 0x38800000u) {                        // below 2^-14: subnormal or zero
      if (ax <= 0x33000000u) return sign;          // <= 2^-25 rounds to zero (the tie too)
      const uint32_t e = ax >> 23;
      const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
      const uint32_t s = 126 - e;  // 14..24: m * 2^(e-150) in units of 2^-24
      uint32_t r = m >> s;
      const uint32_t rem = m & ((1u << s) - 1);
      const uint32_t half = 1u << (s - 1);
      if (rem > half || (rem == half && (r & 1u))) ++r;
      return static_cast<uint16_t>(sign | r);
    }
    uint32_t r = (ax >> 13) - (112u << 10);  // rebias the exponent, keep 10 mantissa bits
    const uint32_t rem = ax & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // a carry moves into the exponent
    return static_cast<uint16_t>(sign | r);
  }
};

struct Sum {
  template <class T>
  static T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
    } else {
      return a + b;
    }
  }
};
struct Max {
  template <class T>
  static T apply(T a, T b) {
    return a < b ? b : a;
  }
};
struct Min {
  template <class T>
  static T apply(T a, T b) {
    return b < a ? b : a;
  }
};

// out[i] = a[i] (op) b[i]; out may be a or b.
using ReduceFn = void (*)(void* out, const void* a, const void* b, size_t n);

template <class T, class Op>
void reduce_plain(void* out, const void* a, const void* b, size_t n) {
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = Op::apply(x[i], y[i]);
}

template <class Conv, class Op>
void reduce_half(void* out, const void* a, const void* b, size_t n) {
  uint16_t* o = static_cast<uint16_t*>(out);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) {
    o[i] = Conv::from_float(Op::apply(Conv::to_float(x[i]), Conv::to_float(y[i])));
  }
}

template <class Op>
ReduceFn reduce_for(int32_t dtype) {
  switch (dtype) {
    case DSPP_F32:
      return &reduce_plain<float, Op>;
    case DSPP_F64:
      return &reduce_plain<double, Op>;
    case DSPP_F16:
      return &reduce_half<F16, Op>;
    case DSPP_BF16:
      return &reduce_half<Bf16, Op>;
    case DSPP_I32:
      return &reduce_plain<int32_t, Op>;
    case DSPP_I64:
      return &reduce_plain<int64_t, Op>;
    case DSPP_U8:
      return &reduce_plain<uint8_t, Op>;
    default:
      return nullptr;
  }
}

// Avg reduces with sum, then divides (divide_by).
inline ReduceFn reduce_fn(int32_t dtype, int32_t op) {
  switch (op) {
    case dspp::kReduceSum:
    case dspp::kReduceAvg:
      return reduce_for<Sum>(dtype);
    case dspp::kReduceMax:
      return reduce_for<Max>(dtype);
    case dspp::kReduceMin:
      return reduce_for<Min>(dtype);
    default:
      return nullptr;
  }
}

// data[i] /= by, for the float dtypes (avg).
inline void divide_by(void* data, int32_t dtype, size_t n, int32_t by) {
  switch (dtype) {
    case DSPP_F32: {
      float* p = static_cast<float*>(data);
      const float d = static_cast<float>(by);
      for (size_t i = 0; i < n; ++i) p[i] /= d;
      break;
    }
    case DSPP_F64: {
      double* p = static_cast<double*>(data);
      const double d = by;
      for (size_t i = 0; i < n; ++i) p[i] /= d;
      break;
    }
    case DSPP_F16:
    case DSPP_BF16: {
      uint16_t* p = static_cast<uint16_t*>(data);
      const float d = static_cast<float>(by);
      if (dtype == DSPP_F16) {
        for (size_t i = 0; i < n; ++i) p[i] = F16::from_float(F16::to_float(p[i]) / d);
      } else {
        for (size_t i = 0; i < n; ++i) p[i] = Bf16::from_float(Bf16::to_float(p[i]) / d);
      }
      break;
    }
    default:
      break;
  }
}

}  // namespace dspp_gloo
