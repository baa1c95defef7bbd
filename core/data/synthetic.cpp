// The embedded synthetic task: multi-digit addition "A+B=C;" (see AdditionTask in <dspp/data.h>).
// Chosen because a small GPT learns it in minutes on a CPU and its loss has a known floor: the
// operands are random, every other token follows from the ones before it, so "learned" is
// measurable as the distance between the held-out loss and irreducible_loss().
#include <dspp/data.h>
#include <dspp/error.h>
#include <cmath>
#include <string>
#include <utility>

#include "data/prng.h"

namespace dspp {

namespace {

constexpr char kDigitChars[] = "0123456789abcdefghijklmnopqrstuvwxyz";
constexpr int kMaxBase = 36;
constexpr int kMaxDigits = 64;
// Separate streams for the two splits: the same seed never yields a held-out sample that is
// also a training sample (beyond chance agreement of random digits).
constexpr uint64_t kTrainSalt = 0x747261696e000001ULL;
constexpr uint64_t kHeldOutSalt = 0x68656c646f757402ULL;

}  // namespace

AdditionTask::AdditionTask(AdditionTaskOptions options) : options_(options) {
  const AdditionTaskOptions& o = options_;
  if (o.digits < 1 || o.digits > kMaxDigits) {
    throw Error(Errc::kInvalidArgument, "AdditionTask: digits must be in [1, " +
                                            std::to_string(kMaxDigits) + "], got " +
                                            std::to_string(o.digits));
  }
  if (o.base < 2 || o.base > kMaxBase) {
    throw Error(Errc::kInvalidArgument, "AdditionTask: base must be in [2, " +
                                            std::to_string(kMaxBase) + "], got " +
                                            std::to_string(o.base));
  }
  if (o.context < 1) {
    throw Error(Errc::kInvalidArgument,
                "AdditionTask: context must be >= 1, got " + std::to_string(o.context));
  }
  if (o.vocab_size != 0 && o.vocab_size < o.base + 3) {
    throw Error(Errc::kInvalidArgument, "AdditionTask: vocab_size " + std::to_string(o.vocab_size) +
                                            " is smaller than the task's alphabet of base + 3 = " +
                                            std::to_string(o.base + 3) + " tokens");
  }
  if (o.num_samples < 1) {
    throw Error(Errc::kInvalidArgument,
                "AdditionTask: num_samples must be >= 1, got " + std::to_string(o.num_samples));
  }
}

int64_t AdditionTask::vocab_size() const {
  return options_.vocab_size != 0 ? options_.vocab_size : options_.base + 3;
}

std::vector<int32_t> AdditionTask::tokens(int64_t index) const {
  if (index < 0 || index >= options_.num_samples) {
    throw Error(Errc::kInvalidArgument, "AdditionTask: index " + std::to_string(index) +
                                            " out of range [0, " +
                                            std::to_string(options_.num_samples) + ")");
  }
  const int D = options_.digits;
  const int32_t b = options_.base;
  const int32_t plus = b, equals = b + 1, sep = b + 2;
  const uint64_t salt = options_.split == DataSplit::kTrain ? kTrainSalt : kHeldOutSalt;
  SplitMix64 rng(
      data_detail::mix64(data_detail::mix64(options_.seed ^ salt) + static_cast<uint64_t>(index)));
  const size_t n = static_cast<size_t>(options_.context) + 1;
  std::vector<int32_t> out;
  out.reserve(n + static_cast<size_t>(problem_length()));
  out.push_back(sep);  // every window starts at a problem boundary
  std::vector<int32_t> a(static_cast<size_t>(D)), bb(static_cast<size_t>(D));
  std::vector<int32_t> c(static_cast<size_t>(D) + 1);
  while (out.size() < n) {
    for (int i = 0; i < D; ++i) a[static_cast<size_t>(i)] = static_cast<int32_t>(rng.below(b));
    for (int i = 0; i < D; ++i) bb[static_cast<size_t>(i)] = static_cast<int32_t>(rng.below(b));
    // Schoolbook addition from the least significant digit (index D-1) up; c[0] is the carry out.
    int32_t carry = 0;
    for (int i = D - 1; i >= 0; --i) {
      const int32_t s = a[static_cast<size_t>(i)] + bb[static_cast<size_t>(i)] + carry;
      c[static_cast<size_t>(i) + 1] = s % b;
      carry = s / b;
    }
    c[0] = carry;
    out.insert(out.end(), a.begin(), a.end());
    out.push_back(plus);
    out.insert(out.end(), bb.begin(), bb.end());
    out.push_back(equals);
    out.insert(out.end(), c.begin(), c.end());
    out.push_back(sep);
  }
  out.resize(n);
  return out;
}

Sample AdditionTask::get(int64_t index) const {
  const std::vector<int32_t> toks = tokens(index);
  const int64_t T = options_.context;
  Tensor inputs = Tensor::empty({T}, DSPP_I32);
  Tensor targets = Tensor::empty({T}, DSPP_I32);
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    in[t] = toks[static_cast<size_t>(t)];
    tg[t] = toks[static_cast<size_t>(t) + 1];
  }
  return Sample{std::move(inputs), std::move(targets)};
}

AdditionTask::TargetKind AdditionTask::target_kind(int64_t t) const {
  // Token 0 is ';', so target t (token t+1) is character t mod L of a problem:
  // [0, D) A digits, D '+', [D+1, 2D] B digits, 2D+1 '=', [2D+2, 3D+2] C digits, 3D+3 ';'.
  const int64_t D = options_.digits;
  const int64_t r = t % problem_length();
  if (r < D || (r > D && r <= 2 * D)) return TargetKind::kOperand;
  if (r >= 2 * D + 2 && r <= 3 * D + 2) return TargetKind::kAnswer;
  return TargetKind::kSymbol;
}

double AdditionTask::chance_loss() const {
  return std::log(static_cast<double>(vocab_size()));
}

double AdditionTask::irreducible_loss() const {
  const double ln_base = std::log(static_cast<double>(options_.base));
  double total = 0.0;
  for (int64_t t = 0; t < options_.context; ++t) {
    if (target_kind(t) == TargetKind::kOperand) total += ln_base;
  }
  return total / static_cast<double>(options_.context);
}

double AdditionTask::format_only_loss() const {
  // Without looking at the operands: operand digits and the low answer digits are uniform
  // ((A + B) mod base^D is uniform), the top answer digit is the carry out, which is 1 with
  // probability (M - 1) / (2M), M = base^D (pairs with A + B >= M: M(M-1)/2 of M^2).
  const double ln_base = std::log(static_cast<double>(options_.base));
  const double M = std::pow(static_cast<double>(options_.base), options_.digits);
  const double p = (M - 1.0) / (2.0 * M);
  const double carry_entropy = -p * std::log(p) - (1.0 - p) * std::log1p(-p);
  const int64_t top_answer = 2 * static_cast<int64_t>(options_.digits) + 2;
  double total = 0.0;
  for (int64_t t = 0; t < options_.context; ++t) {
    const TargetKind kind = target_kind(t);
    if (kind == TargetKind::kOperand) {
      total += ln_base;
    } else if (kind == TargetKind::kAnswer) {
      total += t % problem_length() == top_answer ? carry_entropy : ln_base;
    }
  }
  return total / static_cast<double>(options_.context);
}

std::string AdditionTask::decode(const int32_t* tokens, int64_t n) const {
  const int32_t b = options_.base;
  std::string s;
  s.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = tokens[i];
    if (id >= 0 && id < b) {
      s.push_back(kDigitChars[id]);
    } else if (id == b) {
      s.push_back('+');
    } else if (id == b + 1) {
      s.push_back('=');
    } else if (id == b + 2) {
      s.push_back(';');
    } else {
      s.push_back('?');
    }
  }
  return s;
}

std::string AdditionTask::decode(const std::vector<int32_t>& tokens) const {
  return decode(tokens.data(), static_cast<int64_t>(tokens.size()));
}

std::string AdditionTask::decode(const Tensor& tokens) const {
  if (tokens.dtype() != DSPP_I32 || tokens.device().type != DSPP_DEVICE_CPU) {
    throw Error(Errc::kInvalidArgument,
                "AdditionTask::decode: needs i32 tokens in host memory, got " + tokens.describe());
  }
  return decode(tokens.data<int32_t>(), tokens.numel());
}

std::vector<int32_t> AdditionTask::encode(const std::string& text) const {
  const int32_t b = options_.base;
  std::vector<int32_t> out;
  out.reserve(text.size());
  for (char ch : text) {
    int32_t id = -1;
    if (ch == '+') {
      id = b;
    } else if (ch == '=') {
      id = b + 1;
    } else if (ch == ';') {
      id = b + 2;
    } else {
      for (int32_t d = 0; d < b; ++d) {
        if (kDigitChars[d] == ch) id = d;
      }
    }
    if (id < 0) {
      throw Error(Errc::kInvalidArgument, std::string("AdditionTask::encode: '") + ch +
                                              "' is not in the base-" + std::to_string(b) +
                                              " addition alphabet");
    }
    out.push_back(id);
  }
  return out;
}

}  // namespace dspp
