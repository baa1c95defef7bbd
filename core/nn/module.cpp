// Module: the parameter/child tree, the two-half backward of containers and the hooks around
// every child.
#include <dspp/error.h>
#include <dspp/initialize.h>
#include <dspp/module.h>

#include <unordered_set>
#include <vector>

#include "engine/zero_init.h"

namespace dspp {
namespace {

// Restores a flag on every exit path, so an exception in a child leaves no stale mode behind.
class FlagScope {
 public:
  FlagScope(bool& flag, bool value) : flag_(flag), saved_(flag) { flag_ = value; }
  ~FlagScope() { flag_ = saved_; }
  FlagScope(const FlagScope&) = delete;
  FlagScope& operator=(const FlagScope&) = delete;

 private:
  bool& flag_;
  bool saved_;
};

std::string describe(const Module& m) {
  std::string p = m.path();
  return m.type_name() + (p.empty() ? std::string(" (root)") : " '" + p + "'");
}

}  // namespace

Module::~Module() {
  // A child may outlive its parent when the host holds a pointer to it.
  for (auto& c : children_) c->parent_ = nullptr;
}

std::string Module::path() const {
  if (parent_ == nullptr) return "";
  std::string up = parent_->path();
  return up.empty() ? name_ : up + "." + name_;
}

std::vector<Module*> Module::children() const {
  std::vector<Module*> out;
  out.reserve(children_.size());
  for (const auto& c : children_) out.push_back(c.get());
  return out;
}

std::vector<Parameter*> Module::parameters() {
  std::vector<Parameter*> all;
  collect(all);
  // Tied parameters are registered in several modules; keep the first (owner's) place.
  std::vector<Parameter*> out;
  std::unordered_set<const Parameter*> seen;
  for (Parameter* p : all) {
    if (seen.insert(p).second) out.push_back(p);
  }
  return out;
}

void Module::collect(std::vector<Parameter*>& out) {
  out.insert(out.end(), direct_.begin(), direct_.end());
  for (auto& c : children_) c->collect(out);
}

Tensor Module::forward(const Tensor&) {
  throw Error(Errc::kInvalidArgument, describe(*this) + " has no forward(x)");
}

Tensor Module::backward_input(const Tensor&) {
  throw Error(Errc::kInvalidArgument, describe(*this) + " has no backward");
}

void Module::backward_weight(const Tensor&) {
  // Replays the children's weight halves in the order their input halves ran (reverse of forward).
  std::vector<Deferred> pending;
  pending.swap(deferred_);
  for (Deferred& d : pending) {
    d.child->backward_weight(d.dy);
    run_hooks(HookPoint::kAfterBackward, *d.child);
  }
}

Tensor Module::backward(const Tensor& dy) {
  deferred_.clear();  // left over only by a split backward that failed half way
  Tensor dx;
  {
    FlagScope full(full_backward_, true);
    dx = backward_input(dy);
  }
  backward_weight(dy);
  return dx;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c->train(on);
}

void Module::zero_grad() {
  for (Parameter* p : parameters()) p->grad.zero_();
}

int Module::add_hooks(ModuleHooks hooks) {
  int id = next_hook_id_++;
  hooks_.emplace_back(id, std::move(hooks));
  return id;
}

void Module::remove_hooks(int id) {
  std::erase_if(hooks_, [id](const auto& h) { return h.first == id; });
}

void Module::add_child(std::string name, std::shared_ptr<Module> child) {
  if (!child)
    throw Error(Errc::kInvalidArgument, describe(*this) + ": child '" + name + "' is null");
  if (name.empty() || name.find('.') != std::string::npos) {
    throw Error(Errc::kInvalidArgument,
                describe(*this) + ": child name '" + name + "' must be non-empty without dots");
  }
  for (const auto& c : children_) {
    if (c->name_ == name) {
      throw Error(Errc::kInvalidArgument, describe(*this) + " already has a child '" + name + "'");
    }
  }
  for (const Module* m = this; m; m = m->parent_) {
    if (m == child.get()) {
      throw Error(Errc::kInvalidArgument,
                  describe(*this) + ": adding '" + name + "' makes a cycle");
    }
  }
  if (child->parent_ != nullptr) {
    throw Error(Errc::kInvalidArgument,
                describe(*child) + " already has a parent; a module is added once");
  }
  child->parent_ = this;
  child->name_ = std::move(name);
  child->rename_parameters();
  children_.push_back(std::move(child));
  // zero::Init: the child is fully built (its constructor has run): partition it now, so only
  // one module at a time is ever whole.
  if (zero::init_context_active()) zero::partition_module(*children_.back());
}

void Module::rename_parameters() {
  std::string prefix = path();
  if (!prefix.empty()) prefix += ".";
  for (OwnedParam& op : owned_) op.param->name = prefix + op.local_name;
  for (auto& c : children_) c->rename_parameters();
}

void Module::register_parameter(std::string name, Parameter& p, std::vector<int64_t> shape) {
  for (const OwnedParam& op : owned_) {
    if (op.local_name == name) {
      throw Error(Errc::kInvalidArgument,
                  describe(*this) + " already has a parameter '" + name + "'");
    }
  }
  std::string prefix = path();
  p.name = prefix.empty() ? name : prefix + "." + name;
  p.shape = shape;
  p.value = Tensor::zeros(shape);
  // Under zero::Init the engine provides gradients later; the module is partitioned right away.
  if (!zero::init_context_active()) p.grad = Tensor::zeros(std::move(shape));
  owned_.push_back({std::move(name), &p});
  direct_.push_back(&p);
}

void Module::register_tied_parameter(Parameter& p) {
  if (!p.value.defined()) {
    throw Error(Errc::kInvalidArgument, describe(*this) + ": tied parameter '" + p.name +
                                            "' is not registered by its owner");
  }
  direct_.push_back(&p);
}

void Module::check_child(const Module& child, const char* what) const {
  if (child.parent_ != this) {
    throw Error(Errc::kInvalidArgument, describe(*this) + "." + what + ": " + describe(child) +
                                            " is not a child of this module");
  }
}

Tensor Module::forward_child(Module& child, const Tensor& x) {
  check_child(child, "forward_child");
  run_hooks(HookPoint::kBeforeForward, child);
  Tensor y = child.forward(x);
  run_hooks(HookPoint::kAfterForward, child);
  return y;
}

Tensor Module::backward_child(Module& child, const Tensor& dy) {
  check_child(child, "backward_child");
  run_hooks(HookPoint::kBeforeBackward, child);
  if (full_backward_) {
    Tensor dx = child.backward(dy);
    run_hooks(HookPoint::kAfterBackward, child);
    return dx;
  }
  Tensor dx = child.backward_input(dy);
  deferred_.push_back({&child, dy});
  return dx;
}

void Module::run_hooks(HookPoint point, Module& child) {
  // Hooks of every module above the child, outermost first (before_*) or last (after_*).
  std::vector<Module*> chain;
  for (Module* m = child.parent_; m; m = m->parent_) {
    if (!m->hooks_.empty()) chain.push_back(m);
  }
  if (chain.empty()) return;
  std::function<void(Module&)> ModuleHooks::*slot = nullptr;
  switch (point) {
    case HookPoint::kBeforeForward:
      slot = &ModuleHooks::before_forward;
      break;
    case HookPoint::kAfterForward:
      slot = &ModuleHooks::after_forward;
      break;
    case HookPoint::kBeforeBackward:
      slot = &ModuleHooks::before_backward;
      break;
    case HookPoint::kAfterBackward:
      slot = &ModuleHooks::after_backward;
      break;
  }
  bool before = point == HookPoint::kBeforeForward || point == HookPoint::kBeforeBackward;
  if (before) {
    for (auto m = chain.rbegin(); m != chain.rend(); ++m) {
      for (auto& [id, h] : (*m)->hooks_) {
        if (h.*slot) (h.*slot)(child);
      }
    }
  } else {
    for (Module* m : chain) {
      for (auto h = m->hooks_.rbegin(); h != m->hooks_.rend(); ++h) {
        if (h->second.*slot) (h->second.*slot)(child);
      }
    }
  }
}

}  // namespace dspp
