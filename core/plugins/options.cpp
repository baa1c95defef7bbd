#include "plugins/options.h"

#include <string>
#include <string_view>

namespace dspp {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

KeySpec option_to_key_spec(const dspp_option_desc& option, const std::string& owner) {
  KeySpec spec;
  spec.path = option.key;
  spec.type = static_cast<dspp_value_type>(option.type);
  spec.default_json = option.default_json ? option.default_json : "";
  spec.doc = option.doc ? option.doc : "";
  if (option.flags & DSPP_OPTION_HAS_MIN) spec.min = option.min_value;
  if (option.flags & DSPP_OPTION_HAS_MAX) spec.max = option.max_value;
  // Hugging Face's Trainer writes "auto" for optimizer and scheduler params (lr, betas,
  // warmup_num_steps, ...); the host fills them, so every option of those kinds accepts it.
  spec.allow_auto = (option.flags & DSPP_OPTION_ALLOW_AUTO) != 0 ||
                    owner.rfind("optimizer/", 0) == 0 || owner.rfind("scheduler/", 0) == 0;
  if (option.choices) {
    std::string_view rest(option.choices);
    while (true) {
      size_t bar = rest.find('|');
      std::string_view choice = trim(rest.substr(0, bar));
      if (!choice.empty()) spec.choices.emplace_back(choice);
      if (bar == std::string_view::npos) break;
      rest.remove_prefix(bar + 1);
    }
  }
  spec.owner = owner;
  return spec;
}

}  // namespace dspp
