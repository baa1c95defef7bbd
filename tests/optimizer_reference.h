// What the optimizer tests share with scripts/reference/{optimizers,muon}.py: the reference JSON
// reader and the integer-hash parameter/gradient formula (exact in fp32, so C++ and Python feed
// identical numbers).
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace optimizer_reference {

// tests/data/<name>, parsed with exact doubles.
inline rapidjson::Document read_data(const std::string& name) {
  std::ifstream in(std::string(DSPP_SOURCE_DIR) + "/tests/data/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  rapidjson::Document d;
  d.Parse<rapidjson::kParseFullPrecisionFlag>(ss.str().c_str());
  return d;
}

inline std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  v.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

inline uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
inline uint32_t hash_key(uint32_t seed, uint32_t t, uint32_t i, uint32_t c) {
  return mix(seed * 0x9E3779B1u + t * 0x85EBCA77u + i * 0xC2B2AE3Du + c * 0x27D4EB2Fu);
}
inline float initial_value(uint32_t seed, uint32_t t, uint32_t i) {
  const int32_t k = static_cast<int32_t>(hash_key(seed, t, i, 0) >> 9) - (1 << 22);
  return static_cast<float>(k) * 0x1p-22f;
}
inline float grad_value(uint32_t seed, uint32_t t, uint32_t i, int64_t step, float scale) {
  const int32_t bias = static_cast<int32_t>(hash_key(seed, t, i, 1) >> 10) - (1 << 21);
  const int32_t noise =
      static_cast<int32_t>(hash_key(seed, t, i, static_cast<uint32_t>(step + 2)) >> 9) - (1 << 22);
  return static_cast<float>(bias + noise) * (0x1p-22f * scale);
}

}  // namespace optimizer_reference
