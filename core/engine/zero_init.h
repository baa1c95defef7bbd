#pragma once

#include <dspp/dist.h>
#include <dspp/module.h>

namespace dspp::zero {

// RAII: zero::Init is suspended while this lives (DeepSpeed's shutdown_init_context /
// restore_init_context around initialize()).
class InitSuspension {
 public:
  InitSuspension();
  ~InitSuspension();
  InitSuspension(const InitSuspension&) = delete;
  InitSuspension& operator=(const InitSuspension&) = delete;

 private:
  bool was_suspended_;
};

// Partitions every whole parameter of `m`'s subtree over the active zero::Init scope's group
// (Module::add_child calls it for a new child while a scope is active).
void partition_module(Module& m);

// A zero::Init parameter's whole value into `dst` (numel elements): an all-gather over `group`.
void gather_whole(const Parameter& p, ProcessGroup& group, const Tensor& dst);

// Fails, naming the parameter, unless `p`'s zero::Init chunk matches `group` (size, rank, length).
void check_partition(const Parameter& p, const ProcessGroup& group);

}  // namespace dspp::zero
