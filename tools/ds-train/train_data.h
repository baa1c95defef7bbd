// What ds-train trains on: the embedded addition task (the default), token files (--data), or a
// synthetic teacher task for the MLP (--model mlp); and how a held-out batch is scored.
#pragma once

#include <dspp/data.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace ds_train {

// Samples [begin, begin + count) of another dataset: the held-out tail of token files.
class Subset : public dspp::Dataset {
 public:
  Subset(std::shared_ptr<const dspp::Dataset> base, int64_t begin, int64_t count);
  int64_t size() const override { return count_; }
  dspp::Sample get(int64_t index) const override;

 private:
  std::shared_ptr<const dspp::Dataset> base_;
  int64_t begin_;
  int64_t count_;
};

struct TrainData {
  std::string description;  // one line for the run's header
  std::shared_ptr<const dspp::Dataset> train;
  std::shared_ptr<const dspp::Dataset> held_out;
  int64_t tokens_per_sample = 1;  // T for language modelling; 1 for the MLP
  std::string unit = "tokens";    // what throughput counts: "tokens", or "samples" for the MLP
  int64_t vocab_size = 0;         // GPT only
  std::optional<double> chance_loss;
  std::optional<double> format_only_loss;
  std::optional<double> irreducible_loss;
  std::string chance_note;  // how chance_loss was obtained, e.g. "ln 13"
  // The addition task (accuracy on answer digits), when that is the data.
  std::shared_ptr<const dspp::AdditionTask> addition;
  // MLP: feature and output sizes; regression (MSE) or classification (cross-entropy).
  int64_t mlp_inputs = 0;
  int64_t mlp_outputs = 0;
  bool mlp_regression = false;
};

// The addition task with `digits`-digit operands, context T; train and held-out splits from seed.
TrainData addition_data(int digits, int64_t context, uint64_t seed);

// Token files (--data), windows of `context`. Held-out: `eval_spec` when given, else the last 5%
// of the windows (at least one), which are then not trained on.
TrainData token_file_data(const std::string& spec, const std::string& eval_spec, int64_t context,
                          int64_t vocab_size);

// The MLP's task: inputs x ~ N(0, I) of kMlpInputs features, targets from a fixed random teacher
// network y = V tanh(U x). Classification: the label is argmax y (kMlpClasses classes).
// Regression: y itself plus N(0, 0.1^2) noise, so the irreducible MSE is 0.01.
TrainData mlp_data(bool regression, uint64_t seed);

// Held-out metrics, summed over batches.
struct Score {
  double loss_sum = 0.0;
  int64_t batches = 0;
  int64_t right = 0;  // answer digits (addition) or samples (MLP classification) predicted right
  int64_t total = 0;
  int64_t problems_right = 0;  // addition: problems whose every answer digit is right
  int64_t problems = 0;

  double loss() const { return batches ? loss_sum / static_cast<double>(batches) : 0.0; }
  bool has_accuracy() const { return total > 0; }
  double accuracy() const { return total ? static_cast<double>(right) / total : 0.0; }
  double problem_accuracy() const {
    return problems ? static_cast<double>(problems_right) / problems : 0.0;
  }
};

// Scores one batch from the model's output of its last forward: GPT logits [B, T, V] against the
// addition task's answer digits (teacher-forced: the model sees the true digits before each one),
// or MLP outputs [B, K] against class labels. Anything else adds only the loss.
void score_batch(const TrainData& data, const dspp::Tensor& output, const dspp::Tensor& targets,
                 float loss, Score& score);

}  // namespace ds_train
