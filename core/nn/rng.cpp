// Rng: splitmix64 (Steele, Lea, Flood 2014) and Box-Muller. Integer arithmetic only, except the
// final log/sqrt/cos in double, which round to the same float on every IEEE libm we know of.
#include <dspp/error.h>
#include <dspp/nn.h>

#include <cmath>
#include <numbers>

namespace dspp {

uint64_t Rng::next_u64() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double Rng::uniform() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = 1.0 - uniform();  // (0, 1]: log(u1) is finite
  double u2 = uniform();
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * std::numbers::pi * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

void Rng::fill_normal(const Tensor& t, float std) {
  if (!t.defined() || t.dtype() != DSPP_F32 || t.device().type != DSPP_DEVICE_CPU) {
    throw Error(Errc::kInvalidArgument,
                "Rng::fill_normal needs an f32 cpu tensor, got " + t.describe());
  }
  float* p = t.data<float>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<float>(normal() * std);
}

}  // namespace dspp
