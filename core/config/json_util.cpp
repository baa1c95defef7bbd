#include "config/json_util.h"

#include <dspp/error.h>

#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

namespace dspp::config_detail {

namespace {

// 1-based line and column of a byte offset, for parse errors.
std::pair<size_t, size_t> line_col(std::string_view text, size_t offset) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

}  // namespace

Document parse_config_text(std::string_view text, const std::string& origin) {
  Document doc;
  // Parse from a copy: RapidJSON wants a NUL-terminated buffer and string_view may not be one.
  std::string buf(text);
  doc.Parse<kParseFlags>(buf.c_str(), buf.size());
  if (doc.HasParseError()) {
    auto [line, col] = line_col(text, doc.GetErrorOffset());
    throw Error(Errc::kConfig,
                origin + ":" + std::to_string(line) + ":" + std::to_string(col) +
                    ": invalid JSON: " + rapidjson::GetParseError_En(doc.GetParseError()));
  }
  if (!doc.IsObject()) {
    throw Error(Errc::kConfig,
                origin + ": a DeepSpeed config must be a JSON object, got " + describe(doc));
  }
  return doc;
}

bool parse_fragment(std::string_view text, Document& out) {
  std::string buf(text);
  out.Parse<kParseFlags>(buf.c_str(), buf.size());
  return !out.HasParseError();
}

void check_duplicate_keys(const Value& v, const std::string& path, const std::string& origin) {
  if (v.IsObject()) {
    std::set<std::string_view> seen;
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
      std::string_view name(it->name.GetString(), it->name.GetStringLength());
      std::string child = join_path(path, name);
      if (!seen.insert(name).second) {
        throw Error(Errc::kConfig, "duplicate key '" + std::string(name) + "' at " + child +
                                       " in " + origin + ": each key may appear once per object");
      }
      check_duplicate_keys(it->value, child, origin);
    }
  } else if (v.IsArray()) {
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
      check_duplicate_keys(v[i], path + "[" + std::to_string(i) + "]", origin);
    }
  }
}

std::string join_path(std::string_view parent, std::string_view name) {
  if (parent.empty()) return std::string(name);
  std::string out(parent);
  out += '.';
  out += name;
  return out;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    if (dot == std::string_view::npos) dot = path.size();
    parts.emplace_back(path.substr(start, dot - start));
    start = dot + 1;
  }
  return parts;
}

const Value* lookup(const Value& root, std::string_view path) {
  const Value* cur = &root;
  if (path.empty()) return cur;
  for (const std::string& part : split_path(path)) {
    if (!cur->IsObject()) return nullptr;
    auto it = cur->FindMember(rapidjson::StringRef(part.data(), part.size()));
    if (it == cur->MemberEnd()) return nullptr;
    cur = &it->value;
  }
  return cur;
}

Value* lookup(Value& root, std::string_view path) {
  return const_cast<Value*>(lookup(static_cast<const Value&>(root), path));
}

std::string to_compact(const Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

std::string to_pretty(const Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(sb);
  w.SetIndent(' ', 2);
  v.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

std::string describe(const Value& v) {
  if (v.IsString()) return "the string " + to_compact(v);
  if (v.IsObject()) return "an object";
  if (v.IsArray()) return "an array " + to_compact(v);
  return to_compact(v);  // numbers, true/false, null
}

bool json_equal(const Value& a, const Value& b, bool fold_case) {
  if (a.IsNumber() && b.IsNumber()) {
    if (a.IsInt64() && b.IsInt64()) return a.GetInt64() == b.GetInt64();
    return a.GetDouble() == b.GetDouble();
  }
  if (a.GetType() != b.GetType()) return false;
  if (a.IsString()) {
    std::string_view sa(a.GetString(), a.GetStringLength());
    std::string_view sb(b.GetString(), b.GetStringLength());
    return fold_case ? iequals(sa, sb) : sa == sb;
  }
  if (a.IsArray()) {
    if (a.Size() != b.Size()) return false;
    for (rapidjson::SizeType i = 0; i < a.Size(); ++i) {
      if (!json_equal(a[i], b[i], fold_case)) return false;
    }
    return true;
  }
  if (a.IsObject()) {
    if (a.MemberCount() != b.MemberCount()) return false;
    for (auto it = a.MemberBegin(); it != a.MemberEnd(); ++it) {
      auto jt = b.FindMember(it->name);
      if (jt == b.MemberEnd() || !json_equal(it->value, jt->value, fold_case)) return false;
    }
    return true;
  }
  return a == b;  // bool and null
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0, symbols = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+' || c == '-') {  // '-' and '_' are the URL-safe spellings DeepSpeed decodes
      v = 62;
    } else if (c == '/' || c == '_') {
      v = 63;
    } else if (c == '=') {
      ++pad;
      continue;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      continue;
    } else {
      return false;
    }
    if (pad) return false;  // data after padding
    ++symbols;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (symbols == 0 || symbols % 4 == 1 || pad > 2) return false;
  if (pad && (symbols + pad) % 4 != 0) return false;
  return true;
}

}  // namespace dspp::config_detail
