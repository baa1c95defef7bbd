// The explicit PRNG of the data code: splitmix64 (Steele, Lea, Flood 2014). Its output is fixed
// by its definition, unlike std::mt19937's distributions, so shuffles and synthetic samples are
// the same on every machine and standard library.
#ifndef DSPP_CORE_DATA_PRNG_H
#define DSPP_CORE_DATA_PRNG_H

#include <cstdint>

namespace dspp {

namespace data_detail {

// splitmix64's output function: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace data_detail

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return data_detail::mix64(state_);
  }

  // Uniform in [0, n), n >= 1, without modulo bias: draws below 2^64 mod n are rejected.
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    uint64_t x = next();
    while (x < threshold) x = next();
    return x % n;
  }

 private:
  uint64_t state_;
};

}  // namespace dspp

#endif  // DSPP_CORE_DATA_PRNG_H
