// zero::Init scopes and zero::GatheredParameters. A thread-local depth counts active scopes;
// initialize() suspends them (sets the suspended flag) so the engine's own allocations are not
// partitioned, then restores.
#include <dspp/initialize.h>

#include <cstring>
#include <string>
#include <utility>

#include "engine/zero_init.h"
#include "log/log.h"

namespace dspp::zero {
namespace {
thread_local int g_depth = 0;
thread_local bool g_suspended = false;
// The group of the innermost active scope (scopes nest; an inner one without a group inherits).
thread_local std::vector<std::shared_ptr<ProcessGroup>> g_groups;

std::shared_ptr<ProcessGroup> world() {
  if (!is_initialized()) init_distributed();
  return world_group();
}

Tensor flat(const Tensor& t) {
  return t.reshape({t.numel()});
}

}  // namespace

Init::Init() : Init(world()) {}

Init::Init(std::shared_ptr<ProcessGroup> group) {
  if (!group) throw Error(Errc::kInvalidArgument, "zero::Init: the process group is null");
  g_groups.push_back(std::move(group));
  ++g_depth;
}

Init::~Init() {
  --g_depth;
  g_groups.pop_back();
}

bool init_context_active() {
  return g_depth > 0 && !g_suspended;
}

InitSuspension::InitSuspension() : was_suspended_(g_suspended) {
  g_suspended = true;
}
InitSuspension::~InitSuspension() {
  g_suspended = was_suspended_;
}

void partition_module(Module& m) {
  ProcessGroup& g = *g_groups.back();
  const int64_t world = g.size(), rank = g.rank();
  for (Parameter* p : m.parameters()) {
    if (p->zero_world > 0 || !p->value.defined()) continue;
    const int64_t n = numel_of(p->shape);
    if (p->value.numel() != n || p->value.dtype() != DSPP_F32) {
      throw Error(Errc::kInvalidArgument, "zero::Init: parameter '" + p->name + "' holds " +
                                              p->value.describe() + ", not its fp32 shape");
    }
    // Every rank keeps a chunk of the same values: rank 0's (DeepSpeed broadcasts them too).
    g.broadcast(p->value, 0);
    const int64_t chunk = zero_init_chunk(n, world);
    Tensor mine = Tensor::zeros({chunk});
    const int64_t lo = std::min(n, rank * chunk), hi = std::min(n, (rank + 1) * chunk);
    std::memcpy(mine.data(), p->value.data<float>() + lo, static_cast<size_t>(hi - lo) * 4);
    p->value = mine;
    p->grad = Tensor();
    p->zero_world = static_cast<int32_t>(world);
    p->zero_rank = static_cast<int32_t>(rank);
  }
}

void check_partition(const Parameter& p, const ProcessGroup& group) {
  const int64_t chunk = zero_init_chunk(numel_of(p.shape), p.zero_world);
  if (p.zero_world != group.size() || p.zero_rank != group.rank()) {
    throw Error(Errc::kInvalidArgument,
                "parameter '" + p.name + "' was partitioned by zero::Init as rank " +
                    std::to_string(p.zero_rank) + " of " + std::to_string(p.zero_world) +
                    ", but the engine's data-parallel group has this process as rank " +
                    std::to_string(group.rank()) + " of " + std::to_string(group.size()));
  }
  if (!p.value.defined() || p.value.numel() != chunk || p.value.dtype() != DSPP_F32) {
    throw Error(Errc::kInvalidArgument, "parameter '" + p.name + "': its zero::Init chunk is " +
                                            (p.value.defined() ? p.value.describe() : "empty") +
                                            ", expected " + std::to_string(chunk) + " fp32");
  }
}

void gather_whole(const Parameter& p, ProcessGroup& group, const Tensor& dst) {
  check_partition(p, group);
  Tensor all = Tensor::empty({p.value.numel() * group.size()});
  group.all_gather(flat(p.value), all);
  std::memcpy(dst.data(), all.data(), dst.nbytes());
}

GatheredParameters::GatheredParameters(std::vector<Parameter*> params, int modifier_rank)
    : params_(std::move(params)), modifier_rank_(modifier_rank) {
  std::shared_ptr<ProcessGroup> g = world_group();
  if (modifier_rank >= g->size()) {
    throw Error(Errc::kInvalidArgument, "GatheredParameters: modifier_rank " +
                                            std::to_string(modifier_rank) + " is not a rank of " +
                                            std::to_string(g->size()));
  }
  chunks_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    if (!p) throw Error(Errc::kInvalidArgument, "GatheredParameters: a parameter is null");
    if (p->zero_world == 0) continue;
    Tensor whole = Tensor::empty(p->shape);
    gather_whole(*p, *g, whole);
    chunks_[i] = p->value;
    p->value = whole;
  }
}

GatheredParameters::GatheredParameters(Engine& engine, std::vector<Parameter*> params,
                                       int modifier_rank)
    : engine_(&engine), params_(std::move(params)), modifier_rank_(modifier_rank) {
  engine.gather_parameters(params_);
}

void GatheredParameters::release() {
  if (released_) return;
  released_ = true;
  if (engine_) {
    engine_->release_parameters(params_, modifier_rank_);
    return;
  }
  std::shared_ptr<ProcessGroup> g = world_group();
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter* p = params_[i];
    if (!chunks_[i].defined()) {
      if (modifier_rank_ >= 0) g->broadcast(p->value, modifier_rank_);
      continue;
    }
    if (modifier_rank_ >= 0) {
      g->broadcast(p->value, modifier_rank_);
      const int64_t n = p->value.numel(), chunk = chunks_[i].numel();
      const int64_t lo = std::min(n, p->zero_rank * chunk);
      const int64_t hi = std::min(n, (p->zero_rank + 1) * chunk);
      std::memcpy(chunks_[i].data(), p->value.data<float>() + lo, static_cast<size_t>(hi - lo) * 4);
    }
    p->value = chunks_[i];
  }
}

GatheredParameters::~GatheredParameters() {
  try {
    release();
  } catch (const std::exception& e) {
    log::error("zero", std::string("GatheredParameters: releasing failed: ") + e.what());
  }
}

}  // namespace dspp::zero
