// Core-internal: a plugin's published option schema as config-registry key specs.
#pragma once

#include <dspp/abi.h>
#include <dspp/config.h>

#include <string>

namespace dspp {

// Converts one validated option (non-null key, known type) into a KeySpec: path = the option key
// (relative to the plugin's section), type, default JSON (NULL: no default), doc, min/max from the
// flags, choices split on '|', allow_auto from the flag (always for optimizer and scheduler
// options), owner "<kind>/<name>".
KeySpec option_to_key_spec(const dspp_option_desc& option, const std::string& owner);

}  // namespace dspp
