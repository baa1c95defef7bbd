// Plugin kind `flagger`: marks parameters before the optimizer sees them (Muon's use_muon rule).
// initialize() runs the configured flaggers after AutoTP and before routing.
#ifndef DSPP_KINDS_FLAGGER_H
#define DSPP_KINDS_FLAGGER_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

struct FlaggerParam {
  const char* name;
  int32_t ndim;
  int64_t shape[DSPP_MAX_DIMS];
  uint32_t flags;  // in/out: DSPP_PARAM_* bits
};

class Flagger {
 public:
  virtual dspp_status apply(FlaggerParam* params, int32_t num_params) noexcept = 0;

 protected:
  ~Flagger() = default;
};

}  // namespace dspp
#endif
#endif
