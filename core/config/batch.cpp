// DeepSpeed's batch rule (runtime/config.py: _set_batch_related_parameters, then _batch_assertion):
//   all three given        -> only checked
//   train + micro          -> gas   = train // micro // dp
//   train + gas            -> micro = train // dp // gas
//   micro + gas            -> train = micro * gas * dp
//   train only             -> gas = 1, micro = train // dp
//   micro only             -> gas = 1, train = micro * dp
//   gas only, or none      -> error
// then each must be > 0 and train == micro * gas * dp. Floor division can make the check fail
// (train 10, micro 3, dp 1 -> gas 3 -> 9 != 10): that is DeepSpeed's outcome too.
#include <dspp/config.h>

#include <string>

namespace dspp {

namespace {

std::string dp_note(int64_t dp, const std::string& source) {
  return " (dp world size " + std::to_string(dp) + ": " + source + ")";
}

}  // namespace

BatchTriple resolve_batch(std::optional<int64_t> train_batch, std::optional<int64_t> micro_batch,
                          std::optional<int64_t> grad_accum, int64_t dp_world_size,
                          const std::string& dp_source) {
  const int64_t dp = dp_world_size;
  const std::string note = dp_note(dp, dp_source);
  if (dp <= 0) {
    throw Error(Errc::kConfig, "the data-parallel world size must be positive" + note);
  }
  // Given values must be positive before they divide anything; DeepSpeed would divide by zero or
  // floor negative numbers and then fail its own assertion.
  auto check_given = [&](const char* name, const std::optional<int64_t>& v) {
    if (v && *v <= 0) {
      throw Error(Errc::kConfig,
                  std::string(name) + " is " + std::to_string(*v) + ": it must be > 0" + note);
    }
  };
  check_given("train_batch_size", train_batch);
  check_given("train_micro_batch_size_per_gpu", micro_batch);
  check_given("gradient_accumulation_steps", grad_accum);

  BatchTriple t;
  t.dp_world_size = dp;
  t.dp_source = dp_source;
  std::string derived;  // how the missing members were computed, for the mismatch message
  auto mul = [&](int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) {
      throw Error(Errc::kConfig, "the batch size overflows a 64-bit integer (" + std::to_string(a) +
                                     " * " + std::to_string(b) + ")" + note);
    }
    return r;
  };

  if (train_batch && micro_batch && grad_accum) {
    t.train_batch_size = *train_batch;
    t.micro_batch_per_gpu = *micro_batch;
    t.gradient_accumulation_steps = *grad_accum;
  } else if (train_batch && micro_batch) {
    t.train_batch_size = *train_batch;
    t.micro_batch_per_gpu = *micro_batch;
    t.gradient_accumulation_steps = *train_batch / *micro_batch / dp;
    derived = "gradient_accumulation_steps = " + std::to_string(*train_batch) + " // " +
              std::to_string(*micro_batch) + " // " + std::to_string(dp) + " = " +
              std::to_string(t.gradient_accumulation_steps);
  } else if (train_batch && grad_accum) {
    t.train_batch_size = *train_batch;
    t.gradient_accumulation_steps = *grad_accum;
    t.micro_batch_per_gpu = *train_batch / dp / *grad_accum;
    derived = "train_micro_batch_size_per_gpu = " + std::to_string(*train_batch) + " // " +
              std::to_string(dp) + " // " + std::to_string(*grad_accum) + " = " +
              std::to_string(t.micro_batch_per_gpu);
  } else if (micro_batch && grad_accum) {
    t.micro_batch_per_gpu = *micro_batch;
    t.gradient_accumulation_steps = *grad_accum;
    t.train_batch_size = mul(mul(*micro_batch, *grad_accum), dp);
  } else if (train_batch) {
    t.train_batch_size = *train_batch;
    t.gradient_accumulation_steps = 1;
    t.micro_batch_per_gpu = *train_batch / dp;
    derived = "gradient_accumulation_steps = 1, train_micro_batch_size_per_gpu = " +
              std::to_string(*train_batch) + " // " + std::to_string(dp) + " = " +
              std::to_string(t.micro_batch_per_gpu);
  } else if (micro_batch) {
    t.micro_batch_per_gpu = *micro_batch;
    t.gradient_accumulation_steps = 1;
    t.train_batch_size = mul(*micro_batch, dp);
  } else {
    throw Error(
        Errc::kConfig,
        std::string("either train_batch_size or train_micro_batch_size_per_gpu must be "
                    "given") +
            (grad_accum ? " (gradient_accumulation_steps alone does not set the batch)" : "") +
            note);
  }

  const std::string how = derived.empty() ? "" : "; derived by floor division: " + derived;
  if (t.gradient_accumulation_steps <= 0) {
    throw Error(Errc::kConfig, "gradient_accumulation_steps is " +
                                   std::to_string(t.gradient_accumulation_steps) +
                                   ": it must be > 0" + note + how);
  }
  if (t.micro_batch_per_gpu <= 0) {
    throw Error(Errc::kConfig, "train_micro_batch_size_per_gpu is " +
                                   std::to_string(t.micro_batch_per_gpu) + ": it must be > 0" +
                                   note + how);
  }
  const int64_t product = mul(mul(t.micro_batch_per_gpu, t.gradient_accumulation_steps), dp);
  if (product != t.train_batch_size) {
    throw Error(Errc::kConfig,
                "train_batch_size " + std::to_string(t.train_batch_size) +
                    " != train_micro_batch_size_per_gpu " + std::to_string(t.micro_batch_per_gpu) +
                    " * gradient_accumulation_steps " +
                    std::to_string(t.gradient_accumulation_steps) + " * dp world size " +
                    std::to_string(dp) + " = " + std::to_string(product) + note + how);
  }
  return t;
}

}  // namespace dspp
