// Small RapidJSON helpers shared by the config registry: parsing with DeepSpeed's leniency
// (comments, trailing commas), duplicate-key detection, dotted-path lookup, value descriptions for
// error messages, and base64 decoding.
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <string_view>
#include <vector>

namespace dspp::config_detail {

using Value = rapidjson::Value;
using Document = rapidjson::Document;
using Allocator = Document::AllocatorType;

// Comments and trailing commas are accepted (DeepSpeed reads files as HJSON); NaN and Infinity are
// not (there is no JSON for them and no DeepSpeed key wants them).
constexpr unsigned kParseFlags =
    rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag;

// Parses `text`; throws Error(kConfig) "<origin>:<line>:<col>: ..." on a syntax error and when the
// top level is not an object.
Document parse_config_text(std::string_view text, const std::string& origin);
// Parses a JSON fragment (a default, an "auto" value); false when it is not valid JSON.
bool parse_fragment(std::string_view text, Document& out);

// Throws Error(kConfig) naming the first duplicated key, its path and the origin.
void check_duplicate_keys(const Value& v, const std::string& path, const std::string& origin);

// "a.b" + "c" -> "a.b.c"; "" + "c" -> "c".
std::string join_path(std::string_view parent, std::string_view name);
std::vector<std::string> split_path(std::string_view path);
// The value at a dotted path, or null when a segment is missing or not an object.
const Value* lookup(const Value& root, std::string_view path);
Value* lookup(Value& root, std::string_view path);

std::string to_compact(const Value& v);
std::string to_pretty(const Value& v);
// For messages: `the string "16"`, `1.5`, `true`, `null`, `an array`, `an object`.
std::string describe(const Value& v);
// Equality of JSON values with numbers compared by value (1 == 1.0) and strings compared
// case-insensitively when `fold_case` (config strings are case-insensitive choices).
bool json_equal(const Value& a, const Value& b, bool fold_case);

std::string lower(std::string_view s);
bool iequals(std::string_view a, std::string_view b);
// Standard or URL-safe alphabet, padding optional, whitespace ignored. False on any other byte.
bool base64_decode(std::string_view in, std::string& out);

}  // namespace dspp::config_detail
