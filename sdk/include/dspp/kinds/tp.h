// Plugin kind `tp`: a tensor-parallel policy (AutoTP). Given the model's parameter names and
// shapes, it says how each is split across the tensor-parallel group and which layers need a
// reduction after them.
#ifndef DSPP_KINDS_TP_H
#define DSPP_KINDS_TP_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

enum TpSplit : int32_t {
  kTpReplicate = 0,  // whole on every rank
  kTpColumn = 1,     // split along the output dimension (dim 0 of a [out, in] weight)
  kTpRow = 2,        // split along the input dimension; the layer's output is all-reduced
  kTpVocab = 3,      // embedding split along the vocabulary
};

struct TpParam {
  const char* name;
  int32_t ndim;
  int64_t shape[DSPP_MAX_DIMS];
  int32_t split;  // out: TpSplit
};

class TpPolicy {
 public:
  virtual dspp_status plan(TpParam* params, int32_t num_params, int32_t tp_size) noexcept = 0;

 protected:
  ~TpPolicy() = default;
};

}  // namespace dspp
#endif
#endif
