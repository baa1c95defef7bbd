// docs/config.md, generated from a ConfigSchema.
#pragma once

#include <dspp/config.h>

#include <string>

namespace dspp::tools {

// The whole reference page: the loading rules, then one table per top-level section.
std::string config_reference_markdown(const ConfigSchema& schema);

}  // namespace dspp::tools
