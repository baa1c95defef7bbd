// What plugins share about element types (header-only; plugins link nothing of each other): the
// dtypes a collective moves, with their names and sizes (the device kernels name dtypes with it
// too), and the reduction ops' names for messages.
#pragma once

#include <dspp/abi.h>
#include <dspp/kinds/comm.h>

#include <cstddef>
#include <cstdint>

namespace dspp::comm_types {

struct DtypeInfo {
  const char* name;
  size_t size;
  bool is_float;
};

// False for a dtype no comm plugin moves.
inline bool dtype_info(int32_t dtype, DtypeInfo* out) {
  switch (dtype) {
    case DSPP_F32:
      *out = {"f32", 4, true};
      return true;
    case DSPP_F64:
      *out = {"f64", 8, true};
      return true;
    case DSPP_F16:
      *out = {"f16", 2, true};
      return true;
    case DSPP_BF16:
      *out = {"bf16", 2, true};
      return true;
    case DSPP_I32:
      *out = {"i32", 4, false};
      return true;
    case DSPP_I64:
      *out = {"i64", 8, false};
      return true;
    case DSPP_U8:
      *out = {"u8", 1, false};
      return true;
    default:
      return false;
  }
}

inline const char* op_name(int32_t op) {
  switch (op) {
    case kReduceSum:
      return "sum";
    case kReduceAvg:
      return "avg";
    case kReduceMax:
      return "max";
    case kReduceMin:
      return "min";
    default:
      return "?";
  }
}

}  // namespace dspp::comm_types
