// zero/stage1: DeepSpeed's ZeRO stage 1. The optimizer states are partitioned across the
// data-parallel ranks: the flat buffer splits into equal partitions (the engine pads it so they
// are), each rank's optimizer is set up over its partition only (so its states are 1/dp of the
// whole), gradients are reduce-scattered at the accumulation boundary so each rank receives its
// partition's reduced gradient, each rank steps its partition, and the updated partitions are
// all-gathered into every rank's parameters. Communication per step: a reduce-scatter and an
// all-gather of the flat buffer, the same volume as stage 0's all-reduce.
//
// An optimizer that needs whole parameters (Muon's orthogonalisation, Lamb's trust ratio) gets
// partitions cut at parameter boundaries instead (balanced by elements, so unequal): gradients
// are then all-reduced and each rank broadcasts the parameters it stepped. Its states are still
// split across ranks; the communication is 3 flat buffers per step instead of 2.
//
// Mixed precision (ZeroSetup::working_dtype): each rank keeps an fp32 master of its partition,
// steps it, and rounds it into its partition of the working copy before the all-gather.
#include "../common/flat_partition_stage.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::pass_through;
using dspp::plugin::StatusError;
namespace zc = dspp::zero_common;

class Stage1 final : public zc::FlatPartitionStage {
 public:
  Stage1(const dspp_host_api* host, ConfigReader cfg)
      : FlatPartitionStage(host), bucket_(zc::reduce_bucket_size(cfg)) {}

  dspp_status init(const dspp::ZeroSetup* s) noexcept override {
    return guard([&] {
      zc::refuse_device(*s, "zero/stage1");
      setup_ = *s;
      if (setup_.flat_params.dtype != DSPP_F32 || setup_.flat_grads.dtype != DSPP_F32) {
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "zero/stage1: flat buffers must be fp32");
      }
      flat_numel_ = setup_.flat_grads.shape[0];
      part_ = zc::partition_optimizer(setup_, flat_numel_, "zero/stage1");
      zc::check_working_dtype(setup_.working_dtype, "zero/stage1");
      // Every rank rounds the whole working copy (identical everywhere after the engine's
      // broadcast), so the first forward sees 16-bit values before any gather.
      zc::round_to(zc::floats(setup_.flat_params), flat_numel_, setup_.working_dtype);
      master_.init(host_, setup_.working_dtype, working(), part_.size());
    });
  }

  dspp_status reduce_gradients(double* sq_norm, int32_t* overflow) noexcept override {
    return guard([&] {
      float* g = zc::floats(setup_.flat_grads);
      zc::round_to(g, flat_numel_, setup_.working_dtype);  // the local gradient in 16 bits
      dspp::Communicator* dp = setup_.dp;
      if (dp->size() > 1) {
        const zc::Reduction r = zc::reduction_of(setup_);
        if (r.before != 1.0f) zc::scale(g, flat_numel_, r.before);
        if (!part_.whole) {
          // In place: rank r's reduced slice lands where its partition already is.
          dspp::CommWork* w = nullptr;
          const dspp_status issued = dp->reduce_scatter(
              setup_.flat_grads, zc::slice(setup_.flat_grads, part_.begin, part_.size()), r.op, &w);
          std::vector<dspp::CommWork*> works;
          if (issued == DSPP_OK) works.push_back(w);
          zc::wait_all(works, issued);
        } else {
          zc::all_reduce_buckets(dp, zc::slice(setup_.flat_grads, 0, flat_numel_), bucket_, r.op);
        }
        if (r.after != 1.0f) zc::scale(g + part_.begin, part_.size(), r.after);
      }
      // Each rank holds its partition's reduced gradient: sum the partitions' squares.
      bool bad = false;
      double v[2] = {zc::sq_norm(g + part_.begin, part_.segments, &bad), 0.0};
      v[1] = bad ? 1.0 : 0.0;
      zc::all_reduce_sum(dp, v, 2);
      *sq_norm = v[0];
      *overflow = v[1] > 0 ? 1 : 0;
    });
  }

  dspp_status step(const dspp::StepArgs* args, double grad_scale) noexcept override {
    return guard([&] {
      float* g = zc::floats(setup_.flat_grads);
      zc::scale_segments(g + part_.begin, part_.segments, static_cast<float>(grad_scale));
      dspp::StepArgs a = *args;
      a.params = zc::host_view(master_.data(working()), part_.size());
      a.grads = zc::slice(setup_.flat_grads, part_.begin, part_.size());
      pass_through(setup_.optimizer->step(&a));
      master_.publish(working());
      zc::gather_partitions(setup_, part_.bounds, part_.whole);
    });
  }

  dspp_status zero_grad() noexcept override {
    std::memset(setup_.flat_grads.data, 0, static_cast<size_t>(flat_numel_) * sizeof(float));
    return DSPP_OK;
  }

  dspp_status memory(dspp::MemoryBreakdown* out) const noexcept override {
    return guard([&] {
      // fp32 training: the parameters are the master weights. Stage 1 keeps whole gradients.
      out->param_bytes = flat_numel_ * 4;
      out->grad_bytes = flat_numel_ * 4;
      out->master_bytes = master_.bytes();
      out->optimizer_state_bytes = zc::optimizer_state_bytes(setup_.optimizer);
      out->buffer_bytes = 0;
    });
  }

 private:
  int64_t bucket_;
};

const dspp_plugin_desc kPlugins[] = {dspp::plugin::describe<dspp::ZeroStage, Stage1>(
    DSPP_KIND_ZERO, "stage1", "1.0.0",
    "ZeRO stage 1: optimizer states partitioned; gradients reduce-scattered, parameters "
    "all-gathered")};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_zero_stage1", kPlugins)
