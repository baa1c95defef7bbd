// What the comm test workers share (Gloo on the CPU, NCCL on the GPU): element access for every
// dtype a collective moves, read and written as double (f16 through the compiler's _Float16, bf16
// by hand), and the failure count (the first 30 printed; a worker exits non-zero if any failed).
#pragma once

#include <dspp/abi.h>
#include <dspp/tensor.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace comm_elements {

inline int g_rank = 0;
inline long g_checks = 0;
inline long g_failures = 0;

inline void fail(const std::string& msg) {
  if (g_failures < 30) std::fprintf(stderr, "rank %d FAIL: %s\n", g_rank, msg.c_str());
  ++g_failures;
}

inline const int kDtypes[] = {DSPP_F32, DSPP_F64, DSPP_F16, DSPP_BF16, DSPP_I32, DSPP_I64, DSPP_U8};

// The core's names and sizes (libdspp, which the workers link).
inline size_t esize(int dt) {
  return dspp::dtype_size(static_cast<dspp_dtype>(dt));
}
inline const char* dname(int dt) {
  return dspp::dtype_name(static_cast<dspp_dtype>(dt));
}
inline bool is_float(int dt) {
  return dt == DSPP_F32 || dt == DSPP_F64 || dt == DSPP_F16 || dt == DSPP_BF16;
}
inline const char* opname(int op) {
  static const char* names[] = {"sum", "avg", "max", "min"};
  return names[op];
}

// bf16 by hand (round to nearest even); f16 through the compiler's _Float16.
inline uint16_t bf16_from(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline void put(void* p, int dt, size_t i, double v) {
  switch (dt) {
    case DSPP_F32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      break;
    case DSPP_F64:
      static_cast<double*>(p)[i] = v;
      break;
    case DSPP_F16: {
      _Float16 h = static_cast<_Float16>(v);
      std::memcpy(static_cast<char*>(p) + 2 * i, &h, 2);
      break;
    }
    case DSPP_BF16:
      static_cast<uint16_t*>(p)[i] = bf16_from(static_cast<float>(v));
      break;
    case DSPP_I32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v);
      break;
    case DSPP_I64:
      static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v);
      break;
    case DSPP_U8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
      break;
  }
}
inline double get(const void* p, int dt, size_t i) {
  switch (dt) {
    case DSPP_F32:
      return static_cast<const float*>(p)[i];
    case DSPP_F64:
      return static_cast<const double*>(p)[i];
    case DSPP_F16: {
      _Float16 h;
      std::memcpy(&h, static_cast<const char*>(p) + 2 * i, 2);
      return static_cast<double>(h);
    }
    case DSPP_BF16:
      return bf16_to(static_cast<const uint16_t*>(p)[i]);
    case DSPP_I32:
      return static_cast<const int32_t*>(p)[i];
    case DSPP_I64:
      return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DSPP_U8:
      return static_cast<const uint8_t*>(p)[i];
  }
  return 0;
}

}  // namespace comm_elements

#define EXPECT(cond, msg)                  \
  do {                                     \
    ++comm_elements::g_checks;             \
    if (!(cond)) comm_elements::fail(msg); \
  } while (0)
