// Core-internal side of the plugin host services (the public part is dspp::host_api() in
// <dspp/plugins.h>). Not installed: plugins and host apps never see this header.
#pragma once

#include <dspp/abi.h>

namespace dspp {

// Publishes the process's rank and world size to plugins through dspp_host_api. Call it once the
// distributed bootstrap knows them, before creating plugin objects that read them.
void set_host_rank(int rank, int world_size);

// Clears this thread's plugin error message, so a failing call that sets none is not blamed on
// an older message.
void clear_plugin_error();

// A config view with no keys: every plugin option takes its default. Used when the caller has no
// config (ds-plugins check, tests).
const dspp_config_view* empty_config_view();

}  // namespace dspp
