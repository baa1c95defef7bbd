#include "config/validate.h"

#include <cmath>
#include <cstdio>

namespace dspp::config_detail {

namespace {

// 2^63 as a double: the first value an int64 cannot hold.
constexpr double kInt64Limit = 9223372036854775808.0;

bool integral_double(double d) {
  return std::isfinite(d) && std::floor(d) == d && d >= -kInt64Limit && d < kInt64Limit;
}

std::string range_problem(const KeySpec& spec, const Value& v) {
  double d = v.GetDouble();
  if (spec.min && d < *spec.min) {
    return to_compact(v) + " is below the minimum " + format_number(*spec.min);
  }
  if (spec.max && d > *spec.max) {
    return to_compact(v) + " is above the maximum " + format_number(*spec.max);
  }
  return "";
}

bool is_auto(const Value& v) {
  return v.IsString() && std::string_view(v.GetString(), v.GetStringLength()) == "auto";
}

}  // namespace

const char* type_phrase(dspp_value_type type) {
  switch (type) {
    case DSPP_VALUE_BOOL:
      return "true or false";
    case DSPP_VALUE_INT:
      return "an integer";
    case DSPP_VALUE_FLOAT:
      return "a number";
    case DSPP_VALUE_STRING:
      return "a string";
    case DSPP_VALUE_ARRAY:
      return "an array";
    case DSPP_VALUE_OBJECT:
      return "an object";
    case DSPP_VALUE_ANY:
      return "any value";
  }
  return "?";
}

const char* type_name(dspp_value_type type) {
  switch (type) {
    case DSPP_VALUE_BOOL:
      return "bool";
    case DSPP_VALUE_INT:
      return "int";
    case DSPP_VALUE_FLOAT:
      return "float";
    case DSPP_VALUE_STRING:
      return "string";
    case DSPP_VALUE_ARRAY:
      return "array";
    case DSPP_VALUE_OBJECT:
      return "object";
    case DSPP_VALUE_ANY:
      return "any";
  }
  return "?";
}

std::string format_number(double d) {
  if (integral_double(d) && std::fabs(d) < 1e15) {
    return std::to_string(static_cast<int64_t>(d));
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

std::string check_value_type(const KeySpec& spec, const Value& v) {
  std::string mismatch = std::string("expected ") + type_phrase(spec.type) + ", got " + describe(v);
  if (is_auto(v) && spec.type != DSPP_VALUE_STRING && spec.type != DSPP_VALUE_ANY) {
    mismatch += " ('auto' is not accepted for this key)";
  }
  switch (spec.type) {
    case DSPP_VALUE_BOOL:
      return v.IsBool() ? "" : mismatch;
    case DSPP_VALUE_INT:
      if (v.IsInt64()) return range_problem(spec, v);
      if (v.IsUint64()) return to_compact(v) + " does not fit in a 64-bit signed integer";
      if (v.IsDouble() && integral_double(v.GetDouble())) return range_problem(spec, v);
      if (v.IsDouble() && std::floor(v.GetDouble()) == v.GetDouble()) {
        return to_compact(v) + " does not fit in a 64-bit signed integer";
      }
      if (v.IsDouble())
        return "expected an integer, got " + to_compact(v) + " (not a whole number)";
      return mismatch;
    case DSPP_VALUE_FLOAT:
      return v.IsNumber() ? range_problem(spec, v) : mismatch;
    case DSPP_VALUE_STRING: {
      if (!v.IsString()) return mismatch;
      if (spec.choices.empty()) return "";
      std::string_view s(v.GetString(), v.GetStringLength());
      std::string list;
      for (const std::string& c : spec.choices) {
        if (iequals(c, s)) return "";
        if (!list.empty()) list += ", ";
        list += c;
      }
      return "expected one of " + list + " (any case), got " + describe(v);
    }
    case DSPP_VALUE_ARRAY:
      return v.IsArray() ? "" : mismatch;
    case DSPP_VALUE_OBJECT:
      return v.IsObject() ? "" : mismatch;
    case DSPP_VALUE_ANY:
      return "";
  }
  return mismatch;
}

void normalize_value(const KeySpec& spec, Value& v, Allocator& alloc) {
  if (spec.type == DSPP_VALUE_INT && v.IsDouble() && integral_double(v.GetDouble())) {
    v.SetInt64(static_cast<int64_t>(v.GetDouble()));
  } else if (spec.type == DSPP_VALUE_STRING && v.IsString() && !spec.choices.empty()) {
    std::string_view s(v.GetString(), v.GetStringLength());
    for (const std::string& c : spec.choices) {
      if (iequals(c, s) && c != s) {
        v.SetString(c.data(), static_cast<rapidjson::SizeType>(c.size()), alloc);
        break;
      }
    }
  }
}

}  // namespace dspp::config_detail

namespace dspp {
const char* value_type_name(dspp_value_type type) {
  return config_detail::type_name(type);
}
}  // namespace dspp
