// ds-train: the reference trainer and dspp's main job. Trains a GPT (or an MLP) with the engine
// dspp::initialize() returns for a DeepSpeed config, on token files or, by default, on the embedded
// addition task; reports progress, writes metrics to CSV and ends with the held-out loss.
//
//   ds-train [--config FILE] [--steps N] [--data PATH] [--csv FILE] [--seed N] ...
//
// Its last output line is `final train_loss=X eval_loss=Y` followed by more ` key=value` fields.
#include <dspp/device.h>
#include <dspp/engine.h>
#include <dspp/error.h>
#include <dspp/initialize.h>
#include <dspp/models.h>
#include <rapidjson/document.h>
#include <rapidjson/pointer.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "ds_train_default_config.h"
#include "log/log.h"
#include "progress.h"
#include "train_data.h"

namespace po = boost::program_options;

namespace ds_train {
namespace {

using Clock = std::chrono::steady_clock;

// Run length when neither --steps nor a numeric scheduler.params.total_num_steps says.
constexpr int64_t kDefaultSteps = 1000;
// Step losses averaged into the final train loss.
constexpr int64_t kFinalLossWindow = 20;

const char* kUsage =
    "usage: ds-train [options]\n"
    "\n"
    "Trains a GPT (or with --model mlp an MLP) with dspp's engine as a DeepSpeed config says\n"
    "(optimizer, scheduler, batch size, clipping), on token files (--data) or, by default, on the\n"
    "embedded addition task (\";37+05=042;81+...\"). Prints progress, the final train loss (mean "
    "of\n"
    "the last 20 steps) and the held-out loss; the last line is\n"
    "  final train_loss=X eval_loss=Y [key=value ...]\n"
    "\n"
    "The config's \"auto\" values are filled as Hugging Face's Trainer fills them:\n"
    "scheduler.params.total_num_steps with --steps, scheduler.params.warmup_num_steps with\n"
    "--warmup. Without --steps the run is the config's numeric total_num_steps, else 1000 steps.\n";

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string percent(double fraction) {
  return fixed(100.0 * fraction, 1) + "%";
}

// --device's default: DSPP_DEVICE (dsrun forwards it to every rank) or auto.
std::string default_device() {
  const char* v = std::getenv("DSPP_DEVICE");
  return v && *v ? v : "auto";
}

struct Options {
  std::string config_path;  // empty: the built-in default (examples/configs/ds-train.json)
  std::vector<std::string> sets;
  std::optional<int64_t> steps;
  std::optional<int64_t> warmup;
  std::string data;
  std::string eval_data;
  std::string csv;
  std::string dump_params;
  bool zero_init = false;
  std::string save_dir;
  int64_t save_every = 0;
  std::string resume;
  uint64_t seed = 1;
  std::string device = default_device();
  std::string model = "gpt";
  std::string mlp_task = "classification";
  int64_t n_layer = 1;
  int64_t n_head = 4;
  int64_t n_embd = 64;
  int64_t context = 64;
  int64_t vocab_size = 50257;
  bool vocab_size_set = false;  // given on the command line
  int digits = 2;
  int64_t eval_every = 100;
  int64_t eval_batches = 16;
  std::optional<int64_t> print_every;
};

// ---- the config ---------------------------------------------------------------------------------

struct PreparedConfig {
  std::string config;  // what initialize() gets: a file path, or JSON text
  std::string origin;  // for the header
  int64_t steps = kDefaultSteps;
  int64_t warmup = 0;
  std::map<std::string, std::string> auto_values;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw dspp::Error(dspp::Errc::kIo, "config file '" + path + "' could not be opened");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// "optimizer.params.lr" -> "/optimizer/params/lr" (JSON Pointer, RFC 6901 escapes).
std::string json_pointer(const std::string& dotted) {
  std::string p = "/";
  for (char c : dotted) {
    if (c == '.') {
      p += '/';
    } else if (c == '~') {
      p += "~0";
    } else if (c == '/') {
      p += "~1";
    } else {
      p += c;
    }
  }
  return p;
}

// --set KEY=VALUE: VALUE is JSON (1e-3, true, [0.9, 0.95], "Muon"), or else taken as a string.
void apply_set(rapidjson::Document& doc, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw dspp::Error(
        dspp::Errc::kInvalidArgument,
        "--set " + assignment + ": expected KEY=VALUE, e.g. optimizer.params.lr=1e-3");
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  rapidjson::Document value;
  value.Parse(text.c_str());
  rapidjson::Value v;
  if (value.HasParseError()) {
    v.SetString(text.c_str(), static_cast<rapidjson::SizeType>(text.size()), doc.GetAllocator());
  } else {
    v.CopyFrom(value, doc.GetAllocator());
  }
  rapidjson::Pointer pointer(json_pointer(key).c_str());
  if (!pointer.IsValid()) {
    throw dspp::Error(dspp::Errc::kInvalidArgument, "--set " + assignment + ": bad key " + key);
  }
  pointer.Set(doc, v);
}

PreparedConfig prepare_config(const Options& o) {
  PreparedConfig p;
  const bool builtin = o.config_path.empty();
  const std::string text = builtin ? std::string(kDefaultConfig) : read_file(o.config_path);
  p.origin = builtin ? "built-in (examples/configs/ds-train.json)" : o.config_path;
  // A file goes to initialize() by path, so its errors name the file.
  p.config = builtin ? text : o.config_path;

  // Read the config here only for the run length and --set. Text that does not parse is passed
  // on unchanged: initialize() reports what is wrong with it.
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag>(text.c_str());
  const bool parsed = !doc.HasParseError() && doc.IsObject();
  if (parsed) {
    for (const std::string& s : o.sets) apply_set(doc, s);
    // initialize() takes JSON text only when it starts like JSON (not with a comment): hand it
    // the parsed document for the built-in text and after --set.
    if (builtin || !o.sets.empty()) {
      rapidjson::StringBuffer buffer;
      rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
      doc.Accept(writer);
      p.config = buffer.GetString();
    }
    if (!o.sets.empty()) p.origin += " with --set";
  }

  if (o.steps) {
    p.steps = *o.steps;
  } else if (parsed) {
    const rapidjson::Value* total =
        rapidjson::Pointer("/scheduler/params/total_num_steps").Get(doc);
    if (total && total->IsInt64()) p.steps = total->GetInt64();
  }
  if (p.steps < 1) {
    throw dspp::Error(dspp::Errc::kInvalidArgument,
                      "the run needs at least 1 step, got " + std::to_string(p.steps));
  }
  p.warmup = o.warmup.value_or(std::max<int64_t>(1, p.steps / 10));
  if (p.warmup < 1) {
    throw dspp::Error(dspp::Errc::kInvalidArgument,
                      "--warmup must be at least 1, got " + std::to_string(p.warmup));
  }
  // Used only where the config says "auto".
  p.auto_values["scheduler.params.total_num_steps"] = std::to_string(p.steps);
  p.auto_values["scheduler.params.warmup_num_steps"] = std::to_string(p.warmup);
  return p;
}

// The caching allocator's per-category counters on one line: "parameters 123 B, gradients ...".
std::string by_category(const int64_t (&bytes)[dspp::kMemoryCategories], bool gib) {
  std::string line;
  for (int c = 0; c < dspp::kMemoryCategories; ++c) {
    line += std::string(c ? ", " : "") +
            dspp::memory_category_name(static_cast<dspp::MemoryCategory>(c)) + " " +
            (gib ? fixed(static_cast<double>(bytes[c]) / (1 << 30), 2) + " GiB"
                 : std::to_string(bytes[c]) + " B");
  }
  return line;
}

// ---- evaluation ---------------------------------------------------------------------------------

// --dump-params: every parameter as raw little-endian float32, in the model's order (what the
// multi-process tests compare with the single-process run).
// Every rank takes part (ZeRO 3 gathers the values); `lead` writes.
void dump_params(dspp::Engine& engine, const std::string& path, bool lead) {
  dspp::zero::GatheredParameters whole(engine);
  if (!lead) return;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw dspp::Error(dspp::Errc::kIo, "--dump-params " + path + ": could not be created");
  bool ok = true;
  for (const dspp::Parameter* p : engine.module().parameters()) {
    const dspp::Tensor v = p->value.to(dspp::cpu_device(), DSPP_F32);
    ok = ok && std::fwrite(v.data(), 1, v.nbytes(), f) == v.nbytes();
  }
  ok = std::fclose(f) == 0 && ok;
  if (!ok) throw dspp::Error(dspp::Errc::kIo, "--dump-params " + path + ": write failed");
}

// The model's output of its last forward: what score_batch() compares with the targets.
const dspp::Tensor& last_output(dspp::Module& model) {
  static const dspp::Tensor kNone;
  if (auto* gpt = dynamic_cast<dspp::GPT*>(&model)) return gpt->logits();
  if (auto* mlp = dynamic_cast<dspp::MLP*>(&model)) return mlp->output();
  return kNone;
}

// The same first `batches` held-out batches every time, so evaluations along a run compare.
Score evaluate(dspp::Engine& engine, dspp::DataLoader& held_out, int64_t batches,
               const TrainData& data) {
  engine.eval();
  held_out.set_epoch(0);
  Score score;
  const int64_t n = std::min(batches, held_out.len());
  for (int64_t i = 0; i < n; ++i) {
    dspp::Batch batch = held_out.next();
    const float loss = engine.forward(batch);
    // The addition task's accuracy reads the logits on the host (small: its vocabulary is 16).
    const dspp::Tensor& out = last_output(engine.module());
    score_batch(data, data.addition ? out.to(dspp::cpu_device(), DSPP_F32) : out, batch.targets,
                loss, score);
  }
  engine.train();
  return score;
}

std::string describe_score(const Score& s, const TrainData& data) {
  std::string text = "held-out loss " + fixed(s.loss(), 4);
  if (data.addition && s.has_accuracy()) {
    text += ", answer digits right " + percent(s.accuracy()) + ", whole answers right " +
            percent(s.problem_accuracy());
  } else if (s.has_accuracy()) {
    text += ", accuracy " + percent(s.accuracy());
  }
  return text;
}

// ---- the run ------------------------------------------------------------------------------------

struct ModelInfo {
  std::shared_ptr<dspp::TrainableModel> model;
  std::string description;
};

ModelInfo build_model(const Options& o, const TrainData& data) {
  for (auto [name, v] : {std::pair{"--n-layer", o.n_layer}, std::pair{"--n-embd", o.n_embd},
                         std::pair{"--n-head", o.n_head}, std::pair{"--context", o.context}}) {
    if (v < 1) {
      throw dspp::Error(dspp::Errc::kInvalidArgument,
                        std::string(name) + " must be at least 1, got " + std::to_string(v));
    }
  }
  ModelInfo m;
  // --zero-init: each module is partitioned over the ranks as soon as it is built.
  std::optional<dspp::zero::Init> partitioned;
  if (o.zero_init) partitioned.emplace();
  if (o.model == "mlp") {
    dspp::MLPConfig c;
    c.sizes.push_back(data.mlp_inputs);
    for (int64_t i = 0; i < o.n_layer; ++i) c.sizes.push_back(o.n_embd);
    c.sizes.push_back(data.mlp_outputs);
    c.loss = data.mlp_regression ? dspp::MLPLoss::kMSE : dspp::MLPLoss::kCrossEntropy;
    m.model = std::make_shared<dspp::MLP>(c, o.seed);
    m.description = "MLP " + std::to_string(data.mlp_inputs) + " -> " + std::to_string(o.n_layer) +
                    " x " + std::to_string(o.n_embd) + " GELU -> " +
                    std::to_string(data.mlp_outputs) +
                    (data.mlp_regression ? " (MSE)" : " (cross-entropy)");
  } else {
    if (o.n_embd % o.n_head != 0) {
      throw dspp::Error(dspp::Errc::kInvalidArgument, "--n-embd " + std::to_string(o.n_embd) +
                                                          " is not a multiple of --n-head " +
                                                          std::to_string(o.n_head));
    }
    dspp::GPTConfig c;
    c.vocab_size = data.vocab_size;
    // An explicit --vocab-size pads the embedded task's vocabulary (as GPT-2's 50257 is padded to
    // 50304): the shapes of a real model on the built-in data. The extra ids never occur.
    if (o.data.empty() && o.vocab_size_set) {
      if (o.vocab_size < data.vocab_size) {
        throw dspp::Error(dspp::Errc::kInvalidArgument,
                          "--vocab-size " + std::to_string(o.vocab_size) +
                              " is smaller than the embedded task's vocabulary " +
                              std::to_string(data.vocab_size));
      }
      c.vocab_size = o.vocab_size;
    }
    c.block_size = o.context;
    c.n_layer = o.n_layer;
    c.n_head = o.n_head;
    c.n_embd = o.n_embd;
    m.model = std::make_shared<dspp::GPT>(c, o.seed);
    m.description = "GPT n_layer=" + std::to_string(c.n_layer) +
                    " n_head=" + std::to_string(c.n_head) + " n_embd=" + std::to_string(c.n_embd) +
                    " block_size=" + std::to_string(c.block_size) +
                    " vocab=" + std::to_string(c.vocab_size);
  }
  int64_t numel = 0;
  for (const dspp::Parameter* p : m.model->parameters()) numel += dspp::numel_of(p->shape);
  m.description += ", " + std::to_string(numel) + " parameters";
  return m;
}

// Restores the logger's default sink when the run ends, however it ends.
struct SinkGuard {
  ~SinkGuard() { dspp::log::set_sink({}); }
};

int run(const Options& o) {
  const PreparedConfig cfg = prepare_config(o);

  TrainData data;
  if (o.model == "mlp") {
    if (!o.data.empty()) {
      throw dspp::Error(dspp::Errc::kInvalidArgument,
                        "--data is for the GPT; --model mlp trains on its synthetic teacher task");
    }
    if (o.mlp_task != "classification" && o.mlp_task != "regression") {
      throw dspp::Error(dspp::Errc::kInvalidArgument,
                        "--mlp-task must be classification or regression, got " + o.mlp_task);
    }
    data = mlp_data(o.mlp_task == "regression", o.seed);
  } else if (o.model == "gpt") {
    data = o.data.empty() ? addition_data(o.digits, o.context, o.seed)
                          : token_file_data(o.data, o.eval_data, o.context, o.vocab_size);
  } else {
    throw dspp::Error(dspp::Errc::kInvalidArgument,
                      "--model must be gpt or mlp, got '" + o.model + "'");
  }
  if (o.eval_batches < 1) {
    throw dspp::Error(dspp::Errc::kInvalidArgument,
                      "--eval-batches must be at least 1, got " + std::to_string(o.eval_batches));
  }
  // The model is built on the host; initialize() moves its states onto the device.
  const dspp_device device = dspp::use_device(o.device);
  ModelInfo model = build_model(o, data);

  dspp::InitializeArgs args;
  args.model = model.model;
  args.config = cfg.config;
  args.auto_values = cfg.auto_values;
  args.training_data = data.train;
  args.seed = o.seed;
  dspp::InitializeResult init = dspp::initialize(args);
  dspp::Engine& engine = *init.engine;
  dspp::ProcessGroup& dp = *engine.dp_group();
  // The run's report is the same on every rank (losses are averaged over the data-parallel
  // group): rank 0 prints it and writes the files; the others keep only stderr for errors.
  const bool lead = engine.mesh().rank == 0;
  if (!lead && !std::freopen("/dev/null", "w", stdout)) {
    throw dspp::Error(dspp::Errc::kIo,
                      "cannot silence stdout on rank " + std::to_string(engine.mesh().rank));
  }
  dspp::DataLoader& loader = *init.dataloader;
  const dspp::Config& config = engine.config();

  const int64_t micro = engine.train_micro_batch_size_per_gpu();
  const int64_t gas = engine.gradient_accumulation_steps();
  const int64_t tokens_per_step = engine.train_batch_size() * data.tokens_per_sample;
  // Full held-out batches when there are enough samples for one.
  dspp::DataLoader held_out(data.held_out, micro, 0, 1, /*shuffle=*/false, o.seed,
                            /*drop_last=*/data.held_out->size() >= micro);

  std::string optimizer =
      config.has("optimizer.type") ? config.get_string("optimizer.type") : std::string("none");
  if (config.has("optimizer.params")) optimizer += " " + config.get_json("optimizer.params");
  std::string scheduler = "constant lr";
  if (config.has("scheduler.type")) {
    scheduler = config.get_string("scheduler.type") + " " + config.get_json("scheduler.params");
  }
  // Mixed precision: the 16-bit type of the parameters the model computes with (fp32 master
  // weights), and for fp16 the loss scaling.
  std::string precision = engine.precision();
  if (precision == "fp16") {
    precision += config.get_double("fp16.loss_scale") > 0
                     ? " (static loss scale " + std::to_string(engine.loss_scale()) + ")"
                     : " (dynamic loss scale from 2^" +
                           std::to_string(config.get_int("fp16.initial_scale_power")) + ")";
  }
  if (precision != "fp32") precision += ", fp32 master weights";
  std::printf("ds-train: config %s\n", cfg.origin.c_str());
  std::printf("ds-train:   optimizer %s\n", optimizer.c_str());
  std::printf("ds-train:   scheduler %s\n", scheduler.c_str());
  std::printf(
      "ds-train:   micro batch %lld x gradient accumulation %lld, gradient_clipping %g, "
      "ZeRO stage %lld, %s\n",
      static_cast<long long>(micro), static_cast<long long>(gas),
      config.get_double("gradient_clipping"),
      static_cast<long long>(config.get_int("zero_optimization.stage")), precision.c_str());
  std::printf("ds-train: device %s\n", dspp::device_name(device).c_str());
  std::printf("ds-train: model %s\n", model.description.c_str());
  {
    const dspp::MemoryBreakdown m = engine.memory_breakdown();
    std::printf(
        "ds-train: model states per rank (ZeRO stage %lld, dp %lld): parameters %lld B, "
        "gradients %lld B, optimizer states %lld B, master weights %lld B, reduction buffers "
        "%lld B\n",
        static_cast<long long>(config.get_int("zero_optimization.stage")),
        static_cast<long long>(engine.mesh().dp_size), static_cast<long long>(m.param_bytes),
        static_cast<long long>(m.grad_bytes), static_cast<long long>(m.optimizer_state_bytes),
        static_cast<long long>(m.master_bytes), static_cast<long long>(m.buffer_bytes));
    if (device.type == DSPP_DEVICE_CUDA) {
      // The same as the caching allocator counts it (bytes as asked, not rounded to blocks).
      std::printf("ds-train: GPU memory after setup on rank 0, by category: %s\n",
                  by_category(dspp::device_memory().category_requested, false).c_str());
    }
  }
  std::printf("ds-train: data %s\n", data.description.c_str());
  if (data.chance_loss) {
    std::string ref = "ds-train:   reference losses: chance " + fixed(*data.chance_loss, 4) + " (" +
                      data.chance_note + ")";
    if (data.format_only_loss) {
      ref += ", knowing the format but not addition " + fixed(*data.format_only_loss, 4);
    }
    if (data.irreducible_loss) ref += ", irreducible " + fixed(*data.irreducible_loss, 4);
    std::printf("%s\n", ref.c_str());
  }
  std::printf(
      "ds-train: %lld steps of %lld %s, warmup %lld (where the config says \"auto\"), "
      "held-out evaluation every %lld steps on %lld batch(es), seed %llu\n",
      static_cast<long long>(cfg.steps), static_cast<long long>(tokens_per_step), data.unit.c_str(),
      static_cast<long long>(cfg.warmup), static_cast<long long>(o.eval_every),
      static_cast<long long>(std::min(o.eval_batches, held_out.len())),
      static_cast<unsigned long long>(o.seed));
  std::fflush(stdout);

  std::FILE* csv = nullptr;
  if (!o.csv.empty() && lead) {
    csv = std::fopen(o.csv.c_str(), "w");
    if (!csv) throw dspp::Error(dspp::Errc::kIo, "--csv " + o.csv + ": could not be created");
    std::fprintf(csv, "step,loss,lr,grad_norm,%s_per_s,eval_loss,eval_acc\n", data.unit.c_str());
  }
  struct CsvCloser {
    std::FILE*& f;
    ~CsvCloser() {
      if (f) std::fclose(f);
    }
  } csv_closer{csv};

  // Progress lines default to the config's steps_per_print, as the engine's own report.
  const int64_t steps_per_print =
      config.has("steps_per_print") ? config.get_int("steps_per_print") : 0;
  const int64_t print_every = o.print_every.value_or(steps_per_print > 0 ? steps_per_print : 100);
  Progress progress(cfg.steps, print_every, isatty(STDOUT_FILENO) != 0,
                    data.unit == "tokens" ? "tok" : data.unit);
  SinkGuard sink_guard;
  if (progress.tty()) {
    // The engine's steps_per_print lines (stderr) would tear the in-place line: clear it first.
    dspp::log::set_sink([&progress](dspp::log::Level, std::string_view line) {
      progress.clear();
      std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    });
  }

  std::vector<double> losses;
  losses.reserve(static_cast<size_t>(cfg.steps));
  engine.grad_group()->reset_stats();  // count the training steps' communication only
  double train_seconds = 0.0;
  Score last_eval;
  dspp::CommStats eval_comm;
  // --resume: the engine's states and counters from the checkpoint; the loader continues at the
  // next global batch (global batches are the same at every world size, so the position follows
  // from global_samples).
  int64_t first_step = 1;
  if (!o.resume.empty()) {
    const dspp::Engine::LoadedCheckpoint got = engine.load_checkpoint(o.resume);
    if (got.path.empty()) {
      throw dspp::Error(dspp::Errc::kInvalidArgument,
                        "--resume " + o.resume + ": no checkpoint there (no 'latest' file)");
    }
    const int64_t done = engine.global_samples() / (micro * dp.size());
    dspp::DataLoaderState st = loader.state();
    st.epoch = done / loader.len();
    st.position = done % loader.len();
    loader.load_state(st);
    first_step = engine.global_steps() + 1;
    std::printf("ds-train: resumed from %s at step %lld\n", got.path.c_str(),
                static_cast<long long>(first_step));
  }
  const int64_t steps_run = std::max<int64_t>(1, cfg.steps - first_step + 1);
  engine.train();
  const Clock::time_point run_start = Clock::now();
  try {
    for (int64_t step = first_step; step <= cfg.steps; ++step) {
      const Clock::time_point t0 = Clock::now();
      const std::vector<double> lrs = engine.get_lr();  // this optimizer step's lr
      double loss = 0.0;
      for (int64_t m = 0; m < gas; ++m) {
        dspp::Batch batch = loader.next();
        const float l = engine.forward(batch);
        engine.backward(l);
        engine.step();
        loss += l;
      }
      loss /= static_cast<double>(gas);
      // This rank's micro-batches are a 1/dp share of the global batch: its mean over them all.
      if (dp.size() > 1) loss = dp.all_reduce(loss, dspp::kReduceAvg);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      train_seconds += seconds;
      if (!std::isfinite(loss)) {
        throw dspp::Error(dspp::Errc::kRuntime,
                          "step " + std::to_string(step) +
                              ": the loss is not finite; lower the learning rate "
                              "(optimizer.params.lr) or the gradient_clipping threshold");
      }
      losses.push_back(loss);
      const double lr = lrs.empty() ? 0.0 : lrs[0];
      progress.step(step, loss, lr, tokens_per_step, seconds);

      const bool eval_now = step == cfg.steps || (o.eval_every > 0 && step % o.eval_every == 0);
      if (eval_now) {
        // Held-out forwards communicate too at ZeRO 3 (they gather parameters): kept apart from
        // the training steps' count.
        const dspp::CommStats before = engine.grad_group()->stats();
        last_eval = evaluate(engine, held_out, o.eval_batches, data);
        for (const auto& [op, c] : engine.grad_group()->stats()) {
          auto it = before.find(op);
          eval_comm[op].calls += c.calls - (it == before.end() ? 0 : it->second.calls);
          eval_comm[op].bytes += c.bytes - (it == before.end() ? 0 : it->second.bytes);
        }
        if (step != cfg.steps) {
          progress.line("eval step " + std::to_string(step) + ": " +
                        describe_score(last_eval, data));
        }
      }
      if (!o.save_dir.empty() &&
          (step == cfg.steps || (o.save_every > 0 && step % o.save_every == 0))) {
        engine.save_checkpoint(o.save_dir);
      }
      if (csv) {
        std::fprintf(csv, "%lld,%.9g,%.6e,%.6f,%.1f,", static_cast<long long>(step), loss, lr,
                     engine.last_grad_norm(), seconds > 0 ? tokens_per_step / seconds : 0.0);
        if (eval_now) {
          std::fprintf(csv, "%.6f,", last_eval.loss());
          if (last_eval.has_accuracy()) std::fprintf(csv, "%.6f", last_eval.accuracy());
        } else {
          std::fprintf(csv, ",");
        }
        std::fprintf(csv, "\n");
      }
    }
  } catch (...) {
    progress.finish();  // the error message starts on a line of its own
    throw;
  }
  const double wall = std::chrono::duration<double>(Clock::now() - run_start).count();
  progress.finish();
  if (!o.dump_params.empty()) dump_params(engine, o.dump_params, lead);

  const size_t window = std::min<size_t>(kFinalLossWindow, losses.size());
  double train_loss = 0.0;
  for (size_t i = losses.size() - window; i < losses.size(); ++i) train_loss += losses[i];
  train_loss /= static_cast<double>(window);
  const double tokens_per_s =
      train_seconds > 0 ? static_cast<double>(tokens_per_step * steps_run) / train_seconds : 0.0;

  std::printf(
      "ds-train: trained %lld steps in %.1f s (%.1f s in training steps: %s %s/s; "
      "the rest is held-out evaluation)\n",
      static_cast<long long>(steps_run), wall, train_seconds, format_rate(tokens_per_s).c_str(),
      data.unit.c_str());
  if (!config.get_bool("wall_clock_breakdown")) {
    // The engine's timers add up over the whole run unless wall_clock_breakdown resets them.
    const std::map<std::string, double>& t = engine.timers();
    auto at = [&t](const char* k) { return t.count(k) ? t.at(k) : 0.0; };
    std::printf(
        "ds-train: engine time: forward %.1f s (held-out batches included), backward "
        "%.1f s, step %.1f s\n",
        at("forward"), at("backward"), at("step"));
  }
  std::printf("ds-train: train loss %.4f (mean of the last %zu steps)\n", train_loss, window);
  if (std::string(engine.precision()) != "fp32") {
    // Overflow is decided globally, so every rank must have skipped the same steps: say so from
    // rank 0 only after checking it.
    const double skipped = static_cast<double>(engine.skipped_steps());
    const double lo = dp.size() > 1 ? dp.all_reduce(skipped, dspp::kReduceMin) : skipped;
    const double hi = dp.size() > 1 ? dp.all_reduce(skipped, dspp::kReduceMax) : skipped;
    if (lo != hi) {
      throw dspp::Error(dspp::Errc::kRuntime, "ranks skipped different numbers of steps (" +
                                                  std::to_string(lo) + " to " + std::to_string(hi) +
                                                  ")");
    }
    std::printf(
        "ds-train: %s: %lld of %lld optimizer steps skipped on gradient overflow (on every "
        "rank), loss scale %g\n",
        engine.precision(), static_cast<long long>(engine.skipped_steps()),
        static_cast<long long>(engine.global_steps()), engine.loss_scale());
  }
  {
    const dspp::HostMemoryStats h = dspp::host_memory_stats();
    std::printf(
        "ds-train: host memory held by dspp on rank 0: peak %lld B%s\n",
        static_cast<long long>(h.peak),
        h.limit > 0 ? (" (DSPP_HOST_MEMORY_LIMIT " + std::to_string(h.limit) + " B)").c_str() : "");
    if (device.type == DSPP_DEVICE_CUDA) {
      // The caching allocator's counters: model states, activations and scratch together.
      const dspp::DeviceMemory d = dspp::device_memory();
      std::printf("ds-train: GPU memory on rank 0 (%s): peak allocated %.2f GiB of %.2f GiB (%s)\n",
                  dspp::device_name(device).c_str(),
                  static_cast<double>(d.peak_allocated) / (1 << 30),
                  static_cast<double>(d.total) / (1 << 30),
                  ("peaks by category: " + by_category(d.category_peak, true)).c_str());
    }
  }
  if (engine.grad_group()->size() > 1) {
    // Per optimizer step, in bytes of the buffers handed to each collective (comm stats count
    // the logical buffer: all_reduce its size, reduce_scatter its input, all_gather its output).
    std::string line = "ds-train: communication per step on rank 0 (group of " +
                       std::to_string(engine.grad_group()->size()) + "):";
    for (const auto& [op, c] : engine.grad_group()->stats()) {
      const dspp::CommCounter e = eval_comm[op];
      if (c.calls == e.calls) continue;
      line += " " + op + " " + std::to_string((c.calls - e.calls) / steps_run) + "x " +
              std::to_string((c.bytes - e.bytes) / steps_run) + " B";
    }
    std::printf("%s\n", line.c_str());
  }
  std::string held =
      "ds-train: " + describe_score(last_eval, data) + " (" + std::to_string(last_eval.batches) +
      (last_eval.batches == 1 ? " batch of " : " batches of ") + std::to_string(micro) + ")";
  if (data.chance_loss) held += "; chance " + fixed(*data.chance_loss, 4);
  if (data.irreducible_loss) held += ", irreducible " + fixed(*data.irreducible_loss, 4);
  std::printf("%s\n", held.c_str());
  if (csv) std::printf("ds-train: metrics in %s\n", o.csv.c_str());
  if (engine.comms_logger_enabled()) {
    std::printf("ds-train: collectives of this run (comms_logger), rank 0:\n");
    std::fflush(stdout);
    engine.log_comms_summary();
  }

  std::string final_line =
      "final train_loss=" + fixed(train_loss, 4) + " eval_loss=" + fixed(last_eval.loss(), 4);
  if (last_eval.has_accuracy()) final_line += " eval_acc=" + fixed(last_eval.accuracy(), 4);
  if (data.chance_loss) final_line += " chance_loss=" + fixed(*data.chance_loss, 4);
  if (data.irreducible_loss) final_line += " irreducible_loss=" + fixed(*data.irreducible_loss, 4);
  final_line += " steps=" + std::to_string(cfg.steps) +
                " skipped=" + std::to_string(engine.skipped_steps()) + " " + data.unit +
                "_per_s=" + fixed(tokens_per_s, 0) + " time_s=" + fixed(wall, 1);
  std::printf("%s\n", final_line.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace
}  // namespace ds_train

int main(int argc, char** argv) {
  // Progress lines appear as they happen under a launcher or a pipe too (stdout is then a pipe
  // or file, which the C library would otherwise buffer until exit).
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  ds_train::Options o;
  po::options_description run_opts("Run");
  run_opts.add_options()("help,h", "show this help")(
      "config,c", po::value(&o.config_path)->value_name("FILE"),
      "DeepSpeed config file (default: the built-in examples/configs/ds-train.json)")(
      "print-config", "print the built-in default config and exit")(
      "device", po::value(&o.device)->value_name("D")->default_value(o.device),
      "auto (the GPU LOCAL_RANK names when the device/cuda plugin sees one, else the CPU), cpu, "
      "cuda or cuda:N (default: $DSPP_DEVICE when set, else auto)")(
      "set", po::value<std::vector<std::string>>()->composing()->value_name("KEY=VALUE"),
      "override a config key: KEY=VALUE, e.g. --set optimizer.params.lr=1e-3 (repeatable; VALUE "
      "is JSON, or else a string)")("steps", po::value<int64_t>()->value_name("N"),
                                    "optimizer steps (default: the config's numeric "
                                    "scheduler.params.total_num_steps, else 1000)")(
      "warmup", po::value<int64_t>()->value_name("N"),
      "fills scheduler.params.warmup_num_steps where the config says \"auto\" (default: 10% "
      "of --steps)")("seed", po::value(&o.seed)->value_name("N")->default_value(o.seed),
                     "seeds the model's init, the data and its shuffle")(
      "csv", po::value(&o.csv)->value_name("FILE"),
      "write per-step metrics here: step,loss,lr,grad_norm,tokens_per_s,eval_loss,eval_acc")(
      "save", po::value(&o.save_dir)->value_name("DIR"),
      "save a checkpoint into DIR at the end (and every --save-every steps): DeepSpeed's "
      "save_checkpoint, one folder per tag and a 'latest' file")(
      "save-every", po::value(&o.save_every)->value_name("N"), "with --save: also every N steps")(
      "resume", po::value(&o.resume)->value_name("DIR"),
      "continue from DIR's latest checkpoint (any world size or ZeRO stage) up to --steps")(
      "dump-params", po::value(&o.dump_params)->value_name("FILE"),
      "at the end, write every parameter as raw float32 in the model's order (to compare runs)")(
      "eval-every", po::value(&o.eval_every)->value_name("N")->default_value(o.eval_every),
      "evaluate on held-out data every N steps (0: only at the end)")(
      "eval-batches", po::value(&o.eval_batches)->value_name("N")->default_value(o.eval_batches),
      "held-out micro-batches per evaluation (the same ones every time)")(
      "print-every", po::value<int64_t>()->value_name("N"),
      "progress line every N steps when stdout is not a terminal (default: steps_per_print)");
  po::options_description model_opts("Model");
  model_opts.add_options()("model", po::value(&o.model)->default_value(o.model), "gpt or mlp")(
      "zero-init", po::bool_switch(&o.zero_init),
      "build the model inside zero::Init: each module is partitioned over the ranks as soon as "
      "it is built (with ZeRO stage 3 no rank ever holds the whole model)")(
      "n-layer", po::value(&o.n_layer)->value_name("N")->default_value(o.n_layer),
      "transformer blocks (MLP: hidden layers)")(
      "n-head", po::value(&o.n_head)->value_name("N")->default_value(o.n_head), "attention heads")(
      "n-embd", po::value(&o.n_embd)->value_name("N")->default_value(o.n_embd),
      "width (MLP: hidden width)")("context",
                                   po::value(&o.context)->value_name("T")->default_value(o.context),
                                   "tokens per sample (the GPT's block_size)");
  po::options_description data_opts("Data");
  data_opts.add_options()(
      "data", po::value(&o.data)->value_name("PATH"),
      "token files to train on (llm.c or nanoGPT .bin; files, folders or globs, comma-separated); "
      "default: the embedded addition task")(
      "eval-data", po::value(&o.eval_data)->value_name("PATH"),
      "held-out token files (default: the last 5% of --data's windows, not trained on)")(
      "vocab-size", po::value(&o.vocab_size)->value_name("N")->default_value(o.vocab_size),
      "the GPT's vocabulary with --data (GPT-2's by default); without --data, pads the embedded "
      "task's vocabulary to N")("digits",
                                po::value(&o.digits)->value_name("D")->default_value(o.digits),
                                "digits per operand of the addition task")(
      "mlp-task", po::value(&o.mlp_task)->default_value(o.mlp_task),
      "the MLP's synthetic task: classification or regression");
  po::options_description all;
  all.add(run_opts).add(model_opts).add(data_opts);

  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, all), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << ds_train::kUsage << "\n" << all;
      return 0;
    }
    if (vm.count("print-config")) {
      std::cout << ds_train::kDefaultConfig;
      return 0;
    }
    if (vm.count("set")) o.sets = vm["set"].as<std::vector<std::string>>();
    if (vm.count("steps")) o.steps = vm["steps"].as<int64_t>();
    if (vm.count("warmup")) o.warmup = vm["warmup"].as<int64_t>();
    o.vocab_size_set = !vm["vocab-size"].defaulted();
    if (vm.count("print-every")) o.print_every = vm["print-every"].as<int64_t>();
  } catch (const po::error& e) {
    std::cerr << "ds-train: " << e.what() << "\n(ds-train --help lists the options)\n";
    return 2;
  }

  try {
    return ds_train::run(o);
  } catch (const dspp::Error& e) {
    std::fflush(stdout);
    std::cerr << "ds-train: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "ds-train: error: " << e.what() << "\n";
    return 1;
  }
}
