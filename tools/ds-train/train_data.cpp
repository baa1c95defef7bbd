#include "train_data.h"

#include <dspp/error.h>
#include <dspp/nn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

namespace ds_train {
namespace {

// The MLP teacher task's shape.
constexpr int64_t kMlpInputs = 16;
constexpr int64_t kMlpHidden = 32;
constexpr int64_t kMlpClasses = 8;
constexpr int64_t kMlpTrainSamples = 16384;
constexpr int64_t kMlpHeldOutSamples = 2048;
constexpr double kMlpNoiseStd = 0.1;

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

struct Teacher {
  std::vector<float> u;  // [kMlpHidden, kMlpInputs]
  std::vector<float> v;  // [kMlpClasses, kMlpHidden]
};

Teacher make_teacher(uint64_t seed) {
  dspp::Rng rng(seed);
  Teacher t;
  t.u.resize(kMlpHidden * kMlpInputs);
  t.v.resize(kMlpClasses * kMlpHidden);
  // Unit-variance pre-activations and outputs, so tanh is neither linear nor saturated.
  for (float& w : t.u) w = static_cast<float>(rng.normal() / std::sqrt(double(kMlpInputs)));
  for (float& w : t.v) w = static_cast<float>(rng.normal() * 2.0 / std::sqrt(double(kMlpHidden)));
  return t;
}

// n samples of the teacher task; inputs drawn from `seed` (train and held-out use different ones).
std::shared_ptr<dspp::TensorDataset> teacher_samples(const Teacher& t, int64_t n, uint64_t seed,
                                                     bool regression) {
  dspp::Rng rng(seed);
  dspp::Tensor x = dspp::Tensor::empty({n, kMlpInputs});
  dspp::Tensor y =
      regression ? dspp::Tensor::empty({n, kMlpClasses}) : dspp::Tensor::empty({n}, DSPP_I32);
  float* xs = x.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    float* xi = xs + i * kMlpInputs;
    for (int64_t f = 0; f < kMlpInputs; ++f) xi[f] = static_cast<float>(rng.normal());
    double h[kMlpHidden];
    for (int64_t j = 0; j < kMlpHidden; ++j) {
      double s = 0.0;
      for (int64_t f = 0; f < kMlpInputs; ++f) s += t.u[j * kMlpInputs + f] * xi[f];
      h[j] = std::tanh(s);
    }
    double out[kMlpClasses];
    for (int64_t k = 0; k < kMlpClasses; ++k) {
      double s = 0.0;
      for (int64_t j = 0; j < kMlpHidden; ++j) s += t.v[k * kMlpHidden + j] * h[j];
      out[k] = s;
    }
    if (regression) {
      float* yi = y.data<float>() + i * kMlpClasses;
      for (int64_t k = 0; k < kMlpClasses; ++k) {
        yi[k] = static_cast<float>(out[k] + kMlpNoiseStd * rng.normal());
      }
    } else {
      y.data<int32_t>()[i] = static_cast<int32_t>(std::max_element(out, out + kMlpClasses) - out);
    }
  }
  return std::make_shared<dspp::TensorDataset>(x, y);
}

// The MSE of always predicting each output's mean: what a model that ignores the inputs gets.
double predict_mean_mse(const dspp::Dataset& d) {
  const int64_t n = d.size();
  std::vector<double> mean(kMlpClasses, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const float* y = d.get(i).targets.data<float>();
    for (int64_t k = 0; k < kMlpClasses; ++k) mean[k] += y[k];
  }
  for (double& m : mean) m /= static_cast<double>(n);
  double sq = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float* y = d.get(i).targets.data<float>();
    for (int64_t k = 0; k < kMlpClasses; ++k) sq += (y[k] - mean[k]) * (y[k] - mean[k]);
  }
  return sq / static_cast<double>(n * kMlpClasses);
}

int64_t argmax(const float* v, int64_t n) {
  return std::max_element(v, v + n) - v;
}

}  // namespace

Subset::Subset(std::shared_ptr<const dspp::Dataset> base, int64_t begin, int64_t count)
    : base_(std::move(base)), begin_(begin), count_(count) {
  if (begin < 0 || count < 0 || begin + count > base_->size()) {
    throw dspp::Error(dspp::Errc::kInvalidArgument,
                      "subset [" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                          ") of a dataset of " + std::to_string(base_->size()) + " samples");
  }
}

dspp::Sample Subset::get(int64_t index) const {
  if (index < 0 || index >= count_) {
    throw dspp::Error(dspp::Errc::kInvalidArgument, "subset index " + std::to_string(index) +
                                                        " out of " + std::to_string(count_));
  }
  return base_->get(begin_ + index);
}

TrainData addition_data(int digits, int64_t context, uint64_t seed) {
  dspp::AdditionTaskOptions o;
  o.digits = digits;
  o.context = context;
  o.seed = seed;
  o.split = dspp::DataSplit::kTrain;
  auto train = std::make_shared<dspp::AdditionTask>(o);
  o.split = dspp::DataSplit::kHeldOut;
  o.num_samples = 8192;  // far more than any eval reads; generated on demand
  auto held_out = std::make_shared<dspp::AdditionTask>(o);

  TrainData d;
  d.train = train;
  d.held_out = held_out;
  d.addition = train;
  d.tokens_per_sample = context;
  d.vocab_size = train->vocab_size();
  d.chance_loss = train->chance_loss();
  d.chance_note = "ln " + std::to_string(d.vocab_size);
  d.format_only_loss = train->format_only_loss();
  d.irreducible_loss = train->irreducible_loss();
  std::vector<int32_t> example = train->tokens(0);
  example.resize(std::min<size_t>(example.size(), 3 * train->problem_length() + 1));
  d.description = "the addition task (" + std::to_string(digits) + "-digit operands, e.g. \"" +
                  train->decode(example) + "...\"), context " + std::to_string(context) +
                  ", vocab " + std::to_string(d.vocab_size);
  return d;
}

TrainData token_file_data(const std::string& spec, const std::string& eval_spec, int64_t context,
                          int64_t vocab_size) {
  dspp::TokenFileOptions o;
  o.context = context;
  o.vocab_size = vocab_size;
  auto all = std::make_shared<dspp::TokenFileDataset>(dspp::expand_data_paths(spec), o);
  TrainData d;
  d.tokens_per_sample = context;
  d.vocab_size = vocab_size;
  d.chance_loss = std::log(static_cast<double>(vocab_size));
  d.chance_note = "ln " + std::to_string(vocab_size);
  std::string held_out_note;
  if (!eval_spec.empty()) {
    auto eval = std::make_shared<dspp::TokenFileDataset>(dspp::expand_data_paths(eval_spec), o);
    if (eval->size() == 0) {
      throw dspp::Error(dspp::Errc::kIo, "--eval-data " + eval_spec + ": no window of " +
                                             std::to_string(context + 1) + " tokens");
    }
    d.train = all;
    d.held_out = eval;
    held_out_note = "held-out " + eval_spec + " (" + std::to_string(eval->size()) + " windows)";
  } else {
    if (all->size() < 2) {
      throw dspp::Error(dspp::Errc::kIo,
                        "--data " + spec + ": " + std::to_string(all->size()) + " windows of " +
                            std::to_string(context + 1) +
                            " tokens; need at least 2 (one to train on, one held out), or give "
                            "--eval-data");
    }
    // The tail of the last shard: text the model never trains on.
    const int64_t n_held = std::max<int64_t>(1, all->size() / 20);
    d.train = std::make_shared<Subset>(all, 0, all->size() - n_held);
    d.held_out = std::make_shared<Subset>(all, all->size() - n_held, n_held);
    held_out_note = "held-out: the last " + std::to_string(n_held) + " windows";
  }
  d.description = "token files " + spec + " (" + std::to_string(all->num_tokens()) + " tokens in " +
                  std::to_string(all->shards().size()) + " shard(s), " +
                  std::to_string(d.train->size()) + " training windows of " +
                  std::to_string(context) + "; " + held_out_note + "), vocab " +
                  std::to_string(vocab_size);
  return d;
}

TrainData mlp_data(bool regression, uint64_t seed) {
  const Teacher teacher = make_teacher(seed ^ 0x7eac4e5ULL);
  TrainData d;
  d.train = teacher_samples(teacher, kMlpTrainSamples, seed * 2 + 1, regression);
  d.held_out = teacher_samples(teacher, kMlpHeldOutSamples, seed * 2 + 2, regression);
  d.tokens_per_sample = 1;
  d.unit = "samples";
  d.mlp_inputs = kMlpInputs;
  d.mlp_outputs = kMlpClasses;
  d.mlp_regression = regression;
  if (regression) {
    d.chance_loss = predict_mean_mse(*d.held_out);
    d.chance_note = "MSE of predicting the mean";
    d.irreducible_loss = kMlpNoiseStd * kMlpNoiseStd;
  } else {
    d.chance_loss = std::log(static_cast<double>(kMlpClasses));
    d.chance_note = "ln " + std::to_string(kMlpClasses);
    d.irreducible_loss = 0.0;
  }
  d.description =
      std::string(regression ? "regression" : "classification") +
      " by a random teacher network: " + std::to_string(kMlpInputs) + " Gaussian features -> " +
      std::to_string(kMlpClasses) +
      (regression ? " outputs (noise std " + fixed(kMlpNoiseStd, 2) + ")" : " classes") + ", " +
      std::to_string(kMlpTrainSamples) + " training and " + std::to_string(kMlpHeldOutSamples) +
      " held-out samples";
  return d;
}

void score_batch(const TrainData& data, const dspp::Tensor& output, const dspp::Tensor& targets,
                 float loss, Score& score) {
  score.loss_sum += loss;
  score.batches += 1;
  if (data.addition && output.defined() && output.dim() == 3) {
    const dspp::AdditionTask& task = *data.addition;
    const int64_t B = output.size(0), T = output.size(1), V = output.size(2);
    const int64_t answer_digits = task.options().digits + 1;
    const float* logits = output.data<float>();
    const int32_t* tgt = targets.data<int32_t>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t run = 0;        // answer digits seen so far in the current problem
      bool run_right = true;  // all of them right
      for (int64_t t = 0; t < T; ++t) {
        if (task.target_kind(t) != dspp::AdditionTask::TargetKind::kAnswer) {
          run = 0;
          run_right = true;
          continue;
        }
        const bool right = argmax(logits + (b * T + t) * V, V) == tgt[b * T + t];
        score.right += right;
        score.total += 1;
        run_right = run_right && right;
        // A problem counts once its last answer digit is inside the context.
        if (++run == answer_digits) {
          score.problems += 1;
          score.problems_right += run_right;
        }
      }
    }
  } else if (data.mlp_outputs > 0 && !data.mlp_regression && output.defined() &&
             output.dim() == 2) {
    const int64_t B = output.size(0), K = output.size(1);
    for (int64_t b = 0; b < B; ++b) {
      score.right += argmax(output.data<float>() + b * K, K) == targets.data<int32_t>()[b];
      score.total += 1;
    }
  }
}

}  // namespace ds_train
