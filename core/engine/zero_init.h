#pragma once

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

}  // namespace dspp::zero
