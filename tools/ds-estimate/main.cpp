// ds-estimate: memory needed for the model states (parameters, gradients, optimizer states) per
// GPU and per CPU under ZeRO stages 0-3, without loading a model.
//
//   ds-estimate --params 1.3B [--largest-layer 50M] [--gpus-per-node 8] [--nodes 1]
//               [--stage 0|1|2|3|all] [--buffer-factor 1.5] [--json]
//   ds-estimate --model gpt --n-layer 24 --n-embd 1024 --vocab 50257 --context 1024 [same options]
//
// Three estimates, labelled in the output (docs/ds-estimate.md):
//  - DeepSpeed's estimate_zero{2,3}_model_states_mem_needs_all_cold tables (mixed precision with
//    Adam, per CPU and per GPU, for each offload option), stages 2 and 3;
//  - the ZeRO paper's per-GPU model states for mixed precision with Adam (K = 12);
//  - what dspp holds training in fp32 with Adam.
// Exit codes: 0 on success, 2 on a usage error (the message names the flag).
#include "estimate.h"

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <boost/program_options.hpp>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace po = boost::program_options;
using namespace dspp::estimate;

namespace {

constexpr int kExitUsage = 2;
// 16 bytes per parameter must stay exact in a double (2^53): at most ~5.6e14 parameters.
constexpr double kMaxParams = 1e14;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A positive whole count: 125000000, 1.3e9, 125M, 7B, 1.5K (K = 1e3, M = 1e6, B = 1e9, T = 1e12,
// as model names count parameters). `flag` names the option in errors.
int64_t parse_count(const std::string& flag, const std::string& text, double max) {
  std::string number = text;
  double mult = 1;
  if (!number.empty()) {
    switch (std::toupper(static_cast<unsigned char>(number.back()))) {
      case 'K':
        mult = 1e3;
        break;
      case 'M':
        mult = 1e6;
        break;
      case 'B':
        mult = 1e9;
        break;
      case 'T':
        mult = 1e12;
        break;
      default:
        break;
    }
    if (mult != 1) number.pop_back();
  }
  const std::string expect = flag + " expects a positive whole number such as 125000000, 1.3e9, " +
                             "125M or 7B, got '" + text + "'";
  if (number.empty() || std::isspace(static_cast<unsigned char>(number[0])))
    throw UsageError(expect);
  char* end = nullptr;
  const double x = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(x)) throw UsageError(expect);
  const double v = x * mult;
  // Decimal fractions times a power of ten may land a few ulps off the integer (0.1K).
  const double whole = std::round(v);
  if (!(whole >= 1) || std::fabs(v - whole) > 1e-9 * whole) throw UsageError(expect);
  if (whole > max) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", max);
    throw UsageError(flag + " must be at most " + buf + ", got '" + text + "'");
  }
  return static_cast<int64_t>(whole);
}

struct Options {
  Setup setup;
  std::optional<GPTShape> gpt;
  std::vector<int> stages;
  bool stage_all = false;
  bool json = false;
};

po::options_description options_desc() {
  po::options_description d("options");
  auto add = d.add_options();
  add("help,h", "show this help");
  add("params", po::value<std::string>(), "total parameters: 125000000, 1.3e9, 125M, 7B");
  add("largest-layer", po::value<std::string>(),
      "parameters of the largest layer (DeepSpeed's largest_layer_params; stage 3 needs it with "
      "--params)");
  add("model", po::value<std::string>(), "count the parameters of a model instead: gpt");
  add("n-layer", po::value<std::string>(), "gpt: transformer blocks");
  add("n-embd", po::value<std::string>(), "gpt: embedding width");
  add("vocab", po::value<std::string>(), "gpt: vocabulary size");
  add("context", po::value<std::string>(), "gpt: longest context (block_size, rows of wpe)");
  add("gpus-per-node", po::value<std::string>()->default_value("1"), "GPUs per node");
  add("nodes", po::value<std::string>()->default_value("1"), "nodes");
  add("stage", po::value<std::string>()->default_value("all"), "ZeRO stage: 0, 1, 2, 3 or all");
  add("buffer-factor", po::value<std::string>()->default_value("1.5"),
      "DeepSpeed's additional_buffer_factor for the CPU figures");
  add("json", "print JSON instead of tables");
  return d;
}

const std::string* opt(const po::variables_map& vm, const char* key) {
  return vm.count(key) ? &vm[key].as<std::string>() : nullptr;
}

Options parse(const po::variables_map& vm) {
  Options o;
  o.json = vm.count("json") > 0;
  const std::string* params = opt(vm, "params");
  const std::string* model = opt(vm, "model");
  const char* const gpt_flags[] = {"n-layer", "n-embd", "vocab", "context"};
  if (params && model) throw UsageError("--params and --model exclude each other: give one");
  if (!params && !model) throw UsageError("give --params N or --model gpt with its sizes");
  if (params) {
    for (const char* f : gpt_flags)
      if (vm.count(f))
        throw UsageError(std::string("--") + f + " describes a --model; it has no meaning with " +
                         "--params");
    o.setup.params = parse_count("--params", *params, kMaxParams);
  } else {
    if (*model != "gpt")
      throw UsageError("--model must be gpt (the GPT-2 layout of dspp::GPT), got '" + *model + "'");
    for (const char* f : gpt_flags)
      if (!vm.count(f)) throw UsageError(std::string("--model gpt needs --") + f);
    GPTShape g;
    // Bounds keep every product in gpt_params() inside int64; the total is checked below.
    g.n_layer = parse_count("--n-layer", vm["n-layer"].as<std::string>(), 1e5);
    g.n_embd = parse_count("--n-embd", vm["n-embd"].as<std::string>(), 1e6);
    g.vocab = parse_count("--vocab", vm["vocab"].as<std::string>(), 1e8);
    g.context = parse_count("--context", vm["context"].as<std::string>(), 1e8);
    const double approx =
        static_cast<double>(g.n_layer) * 13.0 * static_cast<double>(g.n_embd) *
            static_cast<double>(g.n_embd) +
        static_cast<double>(g.vocab + g.context + 2) * static_cast<double>(g.n_embd);
    if (approx > kMaxParams)
      throw UsageError("--model gpt: these sizes give more than 1e14 parameters");
    o.setup.params = gpt_params(g);
    o.setup.largest_layer_params = gpt_largest_layer(g);
    o.gpt = g;
  }
  if (const std::string* ll = opt(vm, "largest-layer")) {
    if (model)
      throw UsageError(
          "--largest-layer is counted from the model with --model; give it only "
          "with --params");
    o.setup.largest_layer_params = parse_count("--largest-layer", *ll, kMaxParams);
    if (o.setup.largest_layer_params > o.setup.params)
      throw UsageError("--largest-layer (" + *ll + ") exceeds --params (" + *params + ")");
  }
  o.setup.gpus_per_node =
      parse_count("--gpus-per-node", vm["gpus-per-node"].as<std::string>(), 1e6);
  o.setup.nodes = parse_count("--nodes", vm["nodes"].as<std::string>(), 1e6);
  if (o.setup.gpus_per_node * o.setup.nodes > 1000000)
    throw UsageError("--gpus-per-node x --nodes must be at most 1000000");

  const std::string& bf = vm["buffer-factor"].as<std::string>();
  char* end = nullptr;
  const double factor = std::strtod(bf.c_str(), &end);
  if (bf.empty() || end != bf.c_str() + bf.size() || !(factor > 0) || !std::isfinite(factor))
    throw UsageError("--buffer-factor expects a positive number, got '" + bf + "'");
  o.setup.additional_buffer_factor = factor;

  const std::string& stage = vm["stage"].as<std::string>();
  if (stage == "all") {
    o.stage_all = true;
    o.stages = {0, 1, 2, 3};
  } else if (stage.size() == 1 && stage[0] >= '0' && stage[0] <= '3') {
    o.stages = {stage[0] - '0'};
  } else {
    throw UsageError("--stage must be 0, 1, 2, 3 or all, got '" + stage + "'");
  }
  // DeepSpeed's stage-3 estimate needs the largest layer; asked for stage 3 alone it is an error,
  // with `all` the stage-3 DeepSpeed rows are left out with a note.
  if (!o.stage_all && o.stages[0] == 3 && o.setup.largest_layer_params < 0)
    throw UsageError(
        "--stage 3 with --params needs --largest-layer (DeepSpeed's "
        "largest_layer_params: the parameters ZeRO-3 gathers at once)");
  return o;
}

// ---- text output ------------------------------------------------------------------------------

std::string gb(double bytes, int width) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%*.2fGB", width, bytes / kGiB);
  return buf;
}

std::string with_commas(int64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// DeepSpeed pads "cpu" to the width of "none" in its option column.
std::string device(bool cpu) {
  return cpu ? "cpu " : "none";
}

void print_deepspeed_rows(const std::vector<DeepSpeedRow>& rows, bool stage3) {
  std::printf("      per CPU  |  per GPU |   Options\n");
  for (const DeepSpeedRow& r : rows) {
    std::string options;
    if (stage3) {
      options = "offload_param=" + device(r.offload_param) +
                ", offload_optimizer=" + device(r.offload_optimizer) +
                ", zero_init=" + (r.zero_init ? "1" : "0");
    } else {
      // The last column: no padding to keep at the end of the line.
      options = std::string("offload_optimizer=") + (r.offload_optimizer ? "cpu" : "none");
    }
    std::printf("     %s | %s | %s\n", gb(static_cast<double>(r.cpu_bytes), 7).c_str(),
                gb(static_cast<double>(r.gpu_bytes), 6).c_str(), options.c_str());
  }
}

void print_states_row(const char* label, const ModelStates& m, const std::string& formula) {
  std::printf("    %-32s %s %s %s %s   %s\n", label, gb(m.params, 8).c_str(),
              gb(m.grads, 8).c_str(), gb(m.optimizer, 8).c_str(), gb(m.total(), 8).c_str(),
              formula.c_str());
}

void print_text(const Options& o) {
  const Setup& s = o.setup;
  const int64_t nd = s.nodes * s.gpus_per_node;
  // DeepSpeed's own header, so the tables read the same as its output.
  std::printf("Estimated memory needed for params, optim states and gradients for a:\n");
  std::printf("HW: Setup with %lld %s, %lld %s per node.\n", static_cast<long long>(s.nodes),
              s.nodes > 1 ? "nodes" : "node", static_cast<long long>(s.gpus_per_node),
              s.gpus_per_node > 1 ? "GPUs" : "GPU");
  std::printf("SW: Model with %lldM total params", static_cast<long long>(s.params / 1000000));
  if (s.largest_layer_params >= 0)
    std::printf(", %lldM largest layer params",
                static_cast<long long>(s.largest_layer_params / 1000000));
  std::printf(".\n");
  std::printf("Parameters: Ψ = %s", with_commas(s.params).c_str());
  if (o.gpt) {
    std::printf(
        " (GPT-2 layout: n_layer %lld, n_embd %lld, vocab %lld, context %lld; lm_head tied)",
        static_cast<long long>(o.gpt->n_layer), static_cast<long long>(o.gpt->n_embd),
        static_cast<long long>(o.gpt->vocab), static_cast<long long>(o.gpt->context));
  }
  std::printf("\n");
  if (s.largest_layer_params >= 0)
    std::printf("Largest layer: %s parameters\n", with_commas(s.largest_layer_params).c_str());
  std::printf("Data-parallel ranks: Nd = %lld. GB = 2^30 bytes, as DeepSpeed prints them.\n",
              static_cast<long long>(nd));
  std::printf("Model states only: activations, temporary buffers and fragmentation come on top.\n");

  for (int stage : o.stages) {
    std::printf("\nZeRO stage %d\n", stage);
    const char* const ds_header =
        "  DeepSpeed, estimate_zero%d_model_states_mem_needs_all_cold (mixed precision with Adam;\n"
        "  the per-CPU figures include the buffer factor %g):\n";
    if (stage == 2) {
      std::printf(ds_header, 2, s.additional_buffer_factor);
      print_deepspeed_rows(deepspeed_zero2(s), false);
    } else if (stage == 3 && s.largest_layer_params >= 0) {
      std::printf(ds_header, 3, s.additional_buffer_factor);
      print_deepspeed_rows(deepspeed_zero3(s), true);
    } else if (stage == 3) {
      std::printf(
          "  DeepSpeed: pass --largest-layer for its ZeRO-3 table (largest_layer_params).\n");
    } else if (stage == 1) {
      std::printf(
          "  DeepSpeed: no stage-1 estimator (estimate_zero2_* assumes stage 2's "
          "partitioned grads).\n");
    } else {
      std::printf("  DeepSpeed: no stage-0 estimator.\n");
    }
    std::printf("  %-34s %10s %10s %10s %10s   %s\n", "Model states per GPU, no offload", "params",
                "grads", "optimizer", "total", "formula");
    print_states_row("ZeRO paper, 16-bit + Adam K=12", zero_paper_mixed_precision(stage, s),
                     zero_paper_formula(stage));
    print_states_row("dspp, fp32 + Adam", dspp_fp32_adam(stage, s), dspp_fp32_formula(stage));
  }
}

// ---- JSON output ------------------------------------------------------------------------------

using Writer = rapidjson::PrettyWriter<rapidjson::StringBuffer>;

void write_states(Writer& w, const char* key, const ModelStates& m, const std::string& formula) {
  w.Key(key);
  w.StartObject();
  w.Key("params_bytes");
  w.Double(m.params);
  w.Key("grads_bytes");
  w.Double(m.grads);
  w.Key("optimizer_bytes");
  w.Double(m.optimizer);
  w.Key("gpu_bytes");
  w.Double(m.total());
  w.Key("formula");
  w.String(formula.c_str());
  w.EndObject();
}

void print_json(const Options& o) {
  const Setup& s = o.setup;
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("params");
  w.Int64(s.params);
  w.Key("largest_layer_params");
  if (s.largest_layer_params >= 0) {
    w.Int64(s.largest_layer_params);
  } else {
    w.Null();
  }
  if (o.gpt) {
    w.Key("model");
    w.StartObject();
    w.Key("type");
    w.String("gpt");
    w.Key("n_layer");
    w.Int64(o.gpt->n_layer);
    w.Key("n_embd");
    w.Int64(o.gpt->n_embd);
    w.Key("vocab");
    w.Int64(o.gpt->vocab);
    w.Key("context");
    w.Int64(o.gpt->context);
    w.EndObject();
  }
  w.Key("gpus_per_node");
  w.Int64(s.gpus_per_node);
  w.Key("nodes");
  w.Int64(s.nodes);
  w.Key("total_gpus");
  w.Int64(s.gpus_per_node * s.nodes);
  w.Key("additional_buffer_factor");
  w.Double(s.additional_buffer_factor);
  w.Key("stages");
  w.StartArray();
  for (int stage : o.stages) {
    w.StartObject();
    w.Key("stage");
    w.Int(stage);
    w.Key("deepspeed");
    std::vector<DeepSpeedRow> rows;
    const bool stage3 = stage == 3;
    if (stage == 2) rows = deepspeed_zero2(s);
    if (stage3 && s.largest_layer_params >= 0) rows = deepspeed_zero3(s);
    if (stage == 2 || (stage3 && s.largest_layer_params >= 0)) {
      w.StartArray();
      for (const DeepSpeedRow& r : rows) {
        w.StartObject();
        w.Key("offload_optimizer");
        w.String(r.offload_optimizer ? "cpu" : "none");
        if (stage3) {
          w.Key("offload_param");
          w.String(r.offload_param ? "cpu" : "none");
          w.Key("zero_init");
          w.Bool(r.zero_init);
        }
        w.Key("cpu_bytes");
        w.Int64(r.cpu_bytes);
        w.Key("gpu_bytes");
        w.Int64(r.gpu_bytes);
        w.EndObject();
      }
      w.EndArray();
    } else {
      w.Null();  // DeepSpeed has no estimator for it (or stage 3 lacks the largest layer)
    }
    write_states(w, "zero_paper_mixed_precision", zero_paper_mixed_precision(stage, s),
                 zero_paper_formula(stage));
    write_states(w, "dspp_fp32_adam", dspp_fp32_adam(stage, s), dspp_fp32_formula(stage));
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  std::printf("%s\n", sb.GetString());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    po::options_description desc = options_desc();
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << "usage: ds-estimate --params N [--largest-layer N] [options]\n"
                   "       ds-estimate --model gpt --n-layer L --n-embd E --vocab V --context T "
                   "[options]\n\n"
                   "Memory of the model states (parameters, gradients, optimizer states) per GPU "
                   "and per CPU\nunder ZeRO stages 0-3: DeepSpeed's estimator tables, the ZeRO "
                   "paper's mixed-precision\nformula, and dspp's fp32 training. See "
                   "docs/ds-estimate.md.\n\n"
                << desc << "\n";
      return 0;
    }
    const Options o = parse(vm);
    if (o.json) {
      print_json(o);
    } else {
      print_text(o);
    }
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "ds-estimate: %s\n", e.what());
    return kExitUsage;
  } catch (const po::error& e) {
    std::fprintf(stderr, "ds-estimate: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds-estimate: error: %s\n", e.what());
    return 1;
  }
}
