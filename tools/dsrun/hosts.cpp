#include "hosts.h"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace dsrun {
namespace {

// "a,,b" -> {"a", "", "b"}; "" -> {""}: empty pieces are kept so that they can be reported.
std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts(1);
  for (char c : text) {
    if (c == sep) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// A non-negative decimal integer, or -1 when `s` is not one (or does not fit an int).
int parse_count(const std::string& s) {
  if (s.empty() || s.size() > 9) return -1;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
  return std::stoi(s);
}

std::string slots_text(const std::vector<int>& slots) {
  std::string out;
  for (size_t i = 0; i < slots.size(); ++i) out += (i ? "," : "") + std::to_string(slots[i]);
  return out.empty() ? "none" : out;
}

std::string host_names(const HostList& hosts) {
  std::string out;
  for (size_t i = 0; i < hosts.size(); ++i) out += (i ? ", " : "") + hosts[i].name;
  return out;
}

// One `host[:slot,slot...]` word of an --include/--exclude spec, checked against `hosts`.
struct NodeSpec {
  size_t host_index;
  bool all_slots;
  std::vector<int> slots;
};

std::vector<NodeSpec> parse_filter(const HostList& hosts, const std::string& spec,
                                   const std::string& flag, const std::string& where) {
  if (trim(spec).empty()) throw UsageError(flag + ": empty node spec");
  std::vector<NodeSpec> nodes;
  for (const std::string& word : split(spec, '@')) {
    const size_t colon = word.find(':');
    const std::string name = trim(word.substr(0, colon));
    if (name.empty()) throw UsageError(flag + ": empty host name in '" + spec + "'");
    auto it =
        std::find_if(hosts.begin(), hosts.end(), [&](const Host& h) { return h.name == name; });
    if (it == hosts.end())
      throw UsageError(flag + ": host '" + name + "' is not in " + where +
                       " (hosts: " + host_names(hosts) + ")");
    NodeSpec node{static_cast<size_t>(it - hosts.begin()), colon == std::string::npos, {}};
    if (!node.all_slots) {
      for (const std::string& s : split(word.substr(colon + 1), ',')) {
        const int slot = parse_count(trim(s));
        if (slot < 0)
          throw UsageError(flag + ": bad slot '" + trim(s) + "' in '" + word +
                           "' (slots are non-negative integers separated by ',')");
        if (std::find(it->slots.begin(), it->slots.end(), slot) == it->slots.end())
          throw UsageError(flag + ": host '" + name + "' has no slot " + std::to_string(slot) +
                           " in " + where + " (its slots: " + slots_text(it->slots) + ")");
        node.slots.push_back(slot);
      }
    }
    nodes.push_back(std::move(node));
  }
  return nodes;
}

// Keeps hostfile order, sorts and dedupes each host's slots, drops hosts left with none.
HostList normalized(const HostList& hosts) {
  HostList out;
  for (Host h : hosts) {
    std::sort(h.slots.begin(), h.slots.end());
    h.slots.erase(std::unique(h.slots.begin(), h.slots.end()), h.slots.end());
    if (!h.slots.empty()) out.push_back(std::move(h));
  }
  return out;
}

const char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64_encode(const std::string& in) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kBase64[(v >> k) & 63];
  }
  const size_t rest = in.size() - i;
  if (rest > 0) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += rest == 2 ? kBase64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(const std::string& in) {
  std::string out;
  unsigned v = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const char* p = std::strchr(kBase64, c);
    // Accept the standard alphabet too ('+' '/'), in case a user pastes one.
    int d = c == '+' ? 62 : c == '/' ? 63 : (p && c) ? static_cast<int>(p - kBase64) : -1;
    if (d < 0)
      throw UsageError("--world_info: not base64 (bad character '" + std::string(1, c) + "')");
    v = (v << 6) | static_cast<unsigned>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((v >> bits) & 0xff);
    }
  }
  return out;
}

// `slots = 4` -> `slots=4`: DeepSpeed's hostfile regex allows spaces around '='.
std::string squeeze_equals(const std::string& line) {
  std::string out;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '=') {
      while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
      out += '=';
      while (i + 1 < line.size() && std::isspace(static_cast<unsigned char>(line[i + 1]))) ++i;
    } else {
      out += line[i];
    }
  }
  return out;
}

}  // namespace

HostList parse_hostfile_text(const std::string& text, const std::string& origin) {
  HostList hosts;
  std::istringstream in(text);
  std::string raw;
  for (int line_no = 1; std::getline(in, raw); ++line_no) {
    const std::string where = origin + ":" + std::to_string(line_no) + ": ";
    const std::string line = trim(raw.substr(0, raw.find('#')));
    if (line.empty()) continue;
    std::istringstream words(squeeze_equals(line));
    std::string name, word;
    words >> name;
    int slots = -1;
    while (words >> word) {
      const size_t eq = word.find('=');
      if (eq == std::string::npos)
        throw UsageError(where + "expected `hostname slots=N`, got '" + line + "'");
      if (word.substr(0, eq) != "slots") continue;  // max_slots= and the like: not ours
      slots = parse_count(word.substr(eq + 1));
      if (slots < 1)
        throw UsageError(where + "slots must be a positive integer, got '" + word + "'");
    }
    if (slots < 0) throw UsageError(where + "expected `hostname slots=N`, got '" + line + "'");
    for (const Host& h : hosts)
      if (h.name == name) throw UsageError(where + "host '" + name + "' is listed twice");
    Host host{name, {}};
    for (int s = 0; s < slots; ++s) host.slots.push_back(s);
    hosts.push_back(std::move(host));
  }
  if (hosts.empty()) throw UsageError(origin + ": no hosts (expected lines `hostname slots=N`)");
  return hosts;
}

HostList read_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("--hostfile: cannot read '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return parse_hostfile_text(text.str(), path);
}

HostList apply_include(const HostList& hosts, const std::string& spec, const std::string& where) {
  HostList out = hosts;
  for (Host& h : out) h.slots.clear();
  for (const NodeSpec& node : parse_filter(hosts, spec, "--include", where)) {
    const std::vector<int>& add = node.all_slots ? hosts[node.host_index].slots : node.slots;
    std::vector<int>& slots = out[node.host_index].slots;
    slots.insert(slots.end(), add.begin(), add.end());
  }
  out = normalized(out);
  if (out.empty()) throw UsageError("--include '" + spec + "' selects no slots");
  return out;
}

HostList apply_exclude(const HostList& hosts, const std::string& spec, const std::string& where) {
  HostList out = hosts;
  for (const NodeSpec& node : parse_filter(hosts, spec, "--exclude", where)) {
    std::vector<int>& slots = out[node.host_index].slots;
    if (node.all_slots) slots.clear();
    for (int s : node.slots) slots.erase(std::remove(slots.begin(), slots.end(), s), slots.end());
  }
  out = normalized(out);
  if (out.empty()) throw UsageError("--exclude '" + spec + "' leaves no hosts to run on");
  return out;
}

HostList limit_hosts(const HostList& hosts, int num_nodes, int procs_per_node,
                     const std::string& where) {
  HostList out = hosts;
  if (num_nodes == 0) throw UsageError("--num_nodes must be at least 1");
  if (num_nodes > 0) {
    if (static_cast<size_t>(num_nodes) > hosts.size())
      throw UsageError("--num_nodes " + std::to_string(num_nodes) + " but " + where + " lists " +
                       std::to_string(hosts.size()) + " host(s)");
    out.resize(static_cast<size_t>(num_nodes));
  }
  if (procs_per_node == 0) throw UsageError("--num_procs/--num_gpus must be at least 1");
  if (procs_per_node > 0) {
    // As DeepSpeed's --num_gpus: slots 0..N-1 on every host, whatever the hostfile says.
    for (Host& h : out) {
      h.slots.clear();
      for (int s = 0; s < procs_per_node; ++s) h.slots.push_back(s);
    }
  }
  return out;
}

int total_slots(const HostList& hosts) {
  return rank_offset(hosts, static_cast<int>(hosts.size()));
}

int rank_offset(const HostList& hosts, int node) {
  int offset = 0;
  for (int i = 0; i < node; ++i)
    offset += static_cast<int>(hosts[static_cast<size_t>(i)].slots.size());
  return offset;
}

std::string encode_world_info(const HostList& hosts) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  for (const Host& h : hosts) {
    w.Key(h.name.c_str(), static_cast<rapidjson::SizeType>(h.name.size()));
    w.StartArray();
    for (int s : h.slots) w.Int(s);
    w.EndArray();
  }
  w.EndObject();
  return base64_encode(buffer.GetString());
}

HostList decode_world_info(const std::string& encoded) {
  const std::string json = base64_decode(encoded);
  rapidjson::Document doc;
  doc.Parse(json.c_str(), json.size());
  if (doc.HasParseError() || !doc.IsObject())
    throw UsageError("--world_info: not a JSON object of host -> slot list");
  HostList hosts;
  for (const auto& m : doc.GetObject()) {
    Host h{m.name.GetString(), {}};
    if (!m.value.IsArray()) throw UsageError("--world_info: slots of '" + h.name + "' not a list");
    for (const auto& s : m.value.GetArray()) {
      if (!s.IsInt() || s.GetInt() < 0)
        throw UsageError("--world_info: bad slot for '" + h.name + "'");
      h.slots.push_back(s.GetInt());
    }
    if (h.slots.empty()) throw UsageError("--world_info: host '" + h.name + "' has no slots");
    hosts.push_back(std::move(h));
  }
  if (hosts.empty()) throw UsageError("--world_info: no hosts");
  return hosts;
}

bool is_local_host(const std::string& name) {
  if (name == "localhost" || name == "::1" || name.rfind("127.", 0) == 0) return true;
  char self[HOST_NAME_MAX + 1] = {};
  if (gethostname(self, sizeof(self) - 1) != 0) return false;
  return name == self;
}

}  // namespace dsrun
