// What stages 1 and 2 share: the engine's flat buffers, this rank's partition of them and the
// fp32 master of that partition (mixed precision), and the three operations that only depend on
// those: the checkpoint shard, the reload after a checkpoint load, and GatheredParameters'
// write-back.
#pragma once

#include "master_weights.h"
#include "zero_common.h"

#include <algorithm>

namespace dspp::zero_common {

class FlatPartitionStage : public StageBase {
 public:
  using StageBase::StageBase;

  dspp_status shard(ZeroShard* out) noexcept override {
    *out = {part_.begin, part_.end, host_view(master_.data(working()), part_.size()), part_.begin};
    return DSPP_OK;
  }

  dspp_status after_load() noexcept override {
    return guard([&] {
      master_.publish(working());
      gather_partitions(setup_, part_.bounds, part_.whole);
    });
  }

  dspp_status write_back(const int32_t* params, int32_t n) noexcept override {
    return guard([&] {
      // Every rank holds the new whole values: round them all, take this partition's part.
      for (int32_t k = 0; k < n; ++k) {
        const ZeroParam& p = setup_.params[params[k]];
        round_to(floats(setup_.flat_params) + p.offset_in_flat, p.numel, setup_.working_dtype);
        const int64_t lo = std::max(p.offset_in_flat, part_.begin);
        const int64_t hi = std::min(p.offset_in_flat + p.numel, part_.end);
        if (lo < hi) master_.take(working(), lo - part_.begin, hi - lo);
      }
    });
  }

 protected:
  ~FlatPartitionStage() = default;
  // This rank's partition of the working copy.
  float* working() const { return floats(setup_.flat_params) + part_.begin; }

  ZeroSetup setup_{};
  Partition part_;
  int64_t flat_numel_ = 0;
  MasterWeights master_;
};

}  // namespace dspp::zero_common
