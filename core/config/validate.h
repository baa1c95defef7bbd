// Checking one JSON value against its KeySpec; shared by schema registration (defaults must fit
// their own key) and config loading.
#pragma once

#include "config/json_util.h"

#include <dspp/config.h>

#include <string>

namespace dspp::config_detail {

// "" when `v` fits the spec's type, range and choices; else what is wrong, e.g.
// `expected an integer, got the string "16"`. Null is reported as a mismatch: callers decide
// what null means before asking.
std::string check_value_type(const KeySpec& spec, const Value& v);

// Puts a value that fits into its canonical form: an integral number of an INT key (5e8, 2.0)
// becomes an integer, a string of a choice key takes the registered spelling.
void normalize_value(const KeySpec& spec, Value& v, Allocator& alloc);

// "an integer", "a number", ... for messages and docs.
const char* type_phrase(dspp_value_type type);
// Short type names for docs: "int", "float", "bool", "string", "array", "object", "any".
const char* type_name(dspp_value_type type);
// A bound for messages and docs: integral values without a fraction, others in %g form.
std::string format_number(double d);

}  // namespace dspp::config_detail
