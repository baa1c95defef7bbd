// zero::Init scopes. A thread-local depth counts active scopes; initialize() suspends them (sets
// the suspended flag) so the engine's own allocations are not partitioned, then restores.
#include <dspp/initialize.h>

#include "engine/zero_init.h"

namespace dspp::zero {
namespace {
thread_local int g_depth = 0;
thread_local bool g_suspended = false;
}  // namespace

Init::Init() {
  ++g_depth;
}
Init::~Init() {
  --g_depth;
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

}  // namespace dspp::zero
