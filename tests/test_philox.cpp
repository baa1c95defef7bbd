// <dspp/philox.h>, the counter-based generator behind DeviceKernels::fill_uniform/fill_normal:
// Philox4x32-10 against the known-answer vectors published with Random123 (D. E. Shaw Research's
// reference implementation, kat_vectors), and dspp's element mapping (element e is lane e % 4 of
// the block of counter e / 4, key = the seed).
#include <dspp/philox.h>

#include <cstdint>
#include <set>

#include "catch.h"

namespace {

using dspp::philox::Words;

void expect_words(const Words& got, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  INFO(std::hex << got.w[0] << " " << got.w[1] << " " << got.w[2] << " " << got.w[3]);
  CHECK(got.w[0] == a);
  CHECK(got.w[1] == b);
  CHECK(got.w[2] == c);
  CHECK(got.w[3] == d);
}

}  // namespace

TEST_CASE("philox4x32-10 matches Random123's known-answer vectors", "[philox]") {
  using dspp::philox::philox4x32_10;
  expect_words(philox4x32_10(Words{{0u, 0u, 0u, 0u}}, 0u, 0u), 0x6627e8d5u, 0xe169c58du,
               0xbc57ac4cu, 0x9b00dbd8u);
  expect_words(philox4x32_10(Words{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                             0xffffffffu, 0xffffffffu),
               0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
  expect_words(philox4x32_10(Words{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
                             0xa4093822u, 0x299f31d0u),
               0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

TEST_CASE("philox element mapping: counter e / 4 with the seed as key, unit floats below 1",
          "[philox]") {
  using namespace dspp::philox;
  const uint64_t seed = 0x0123456789abcdefull;
  // Element e's block is the counter {lo(e/4), hi(e/4), 0, 0} under key {lo(seed), hi(seed)}.
  for (uint64_t e : {0ull, 3ull, 4ull, 1ull << 34, (1ull << 34) + 7}) {
    const uint64_t b = e / 4;
    const Words want =
        philox4x32_10(Words{{static_cast<uint32_t>(b), static_cast<uint32_t>(b >> 32), 0u, 0u}},
                      0x89abcdefu, 0x01234567u);
    const Words got = block_of(seed, e);
    for (int k = 0; k < 4; ++k) CHECK(got.w[k] == want.w[k]);
  }
  // Distinct seeds and distinct blocks give distinct words (a collision of 32-bit words among a
  // few hundred is possible in principle; these fixed inputs have none).
  std::set<uint32_t> seen;
  for (uint64_t s : {1ull, 2ull, 1ull << 32}) {
    for (uint64_t e = 0; e < 64; e += 4) seen.insert(block_of(s, e).w[0]);
  }
  CHECK(seen.size() == 48);
  CHECK(unit_float(0u) == 0.0f);
  CHECK(unit_float(0xffffffffu) == 1.0f - 0x1p-24f);  // the largest value below 1
  CHECK(unit_float(0x80000000u) == 0.5f);
}
