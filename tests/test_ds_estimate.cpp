// The ds-estimate command line: DeepSpeed's documented example, every number against the formulas
// recomputed here in float64, GPT parameter counting against a dspp::GPT built from the same
// sizes, and errors that name the flag.
#include <dspp/models.h>
#include <dspp/module.h>
#include <rapidjson/document.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "catch.h"
#include "test_util.h"

namespace {

using Result = ToolRun;

// Runs ds-estimate with `args` (no shell metacharacters in them).
Result ds_estimate(const std::string& args) {
  return run_tool(DS_ESTIMATE_BIN, args);
}

rapidjson::Document ds_estimate_json(const std::string& args) {
  const Result r = ds_estimate(args + " --json");
  INFO("ds-estimate " << args << "\n" << r.err);
  REQUIRE(r.rc == 0);
  rapidjson::Document d;
  d.Parse<rapidjson::kParseFullPrecisionFlag>(r.out.c_str());
  REQUIRE_FALSE(d.HasParseError());
  REQUIRE(d.IsObject());
  return d;
}

const rapidjson::Value& stage_of(const rapidjson::Document& d, int stage) {
  for (const auto& s : d["stages"].GetArray())
    if (s["stage"].GetInt() == stage) return s;
  FAIL("stage " << stage << " missing");
  return d;  // not reached
}

// Python's int() of a non-negative float.
int64_t trunc64(double x) {
  return static_cast<int64_t>(x);
}

// A DeepSpeed table row as this test expects it.
struct Row {
  const char* offload_optimizer;
  const char* offload_param;  // nullptr for stage 2
  bool zero_init;
  int64_t cpu, gpu;
};

// DeepSpeed's estimators (runtime/zero/stage_1_and_2.py, stage3.py), written out here on their
// own; products in Python's left-to-right order so that int() truncates the same double.
std::vector<Row> zero2_expected(double p, double gpn, double nodes, double f) {
  const double gpus = gpn * nodes;
  return {
      {"cpu", nullptr, false, trunc64(p * std::max(4 * gpus, 16.0) * f), trunc64(2 * p)},
      {"none", nullptr, false, trunc64(p * 4 * gpn * f), trunc64(2 * p) + trunc64(18 * p / gpus)}};
}

std::vector<Row> zero3_expected(double p, double ll, double gpn, double nodes, double f) {
  const double gpus = gpn * nodes;
  const double node_share = 1 / nodes;
  const int64_t layer = trunc64(4 * ll);
  return {
      {"cpu", "cpu", true, trunc64(p * 18 * node_share * f), layer},
      {"cpu", "cpu", false, trunc64(p * std::max(4 * gpn, 18 * node_share) * f), layer},
      {"cpu", "none", true, trunc64(p * 16 * node_share * f), layer + trunc64(2 * p / gpus)},
      {"cpu", "none", false, trunc64(p * std::max(4 * gpn, 16 * node_share) * f),
       layer + trunc64(2 * p / gpus)},
      {"none", "none", true, trunc64(ll * 4 * gpn * f), layer + trunc64(18 * p / gpus)},
      {"none", "none", false, trunc64(p * 4 * gpn * f), layer + trunc64(18 * p / gpus)},
  };
}

void check_rows(const rapidjson::Value& got, const std::vector<Row>& want) {
  REQUIRE(got.IsArray());
  REQUIRE(got.Size() == want.size());
  for (rapidjson::SizeType i = 0; i < got.Size(); ++i) {
    INFO("row " << i);
    const auto& g = got[i];
    CHECK(std::string(g["offload_optimizer"].GetString()) == want[i].offload_optimizer);
    if (want[i].offload_param) {
      CHECK(std::string(g["offload_param"].GetString()) == want[i].offload_param);
      CHECK(g["zero_init"].GetBool() == want[i].zero_init);
    } else {
      CHECK_FALSE(g.HasMember("offload_param"));
    }
    CHECK(g["cpu_bytes"].GetInt64() == want[i].cpu);
    CHECK(g["gpu_bytes"].GetInt64() == want[i].gpu);
  }
}

void check_states(const rapidjson::Value& got, double params, double grads, double optimizer) {
  CHECK(got["params_bytes"].GetDouble() == Approx(params).epsilon(1e-12));
  CHECK(got["grads_bytes"].GetDouble() == Approx(grads).epsilon(1e-12));
  CHECK(got["optimizer_bytes"].GetDouble() == Approx(optimizer).epsilon(1e-12));
  CHECK(got["gpu_bytes"].GetDouble() == Approx(params + grads + optimizer).epsilon(1e-12));
}

// Parameters one module owns or reads directly (a tied weight too), the largest over the tree:
// what DeepSpeed's model_to_params calls largest_layer_params.
int64_t largest_layer(const dspp::Module& m) {
  int64_t own = 0;
  for (const dspp::Parameter* p : m.direct_parameters()) own += p->value.numel();
  for (const dspp::Module* c : m.children()) own = std::max(own, largest_layer(*c));
  return own;
}

}  // namespace

TEST_CASE("ds-estimate reproduces DeepSpeed's documented 2851M-parameter example",
          "[ds-estimate]") {
  // docs/code-docs/source/memory.rst: estimate_zero{2,3}_model_states_mem_needs_all_cold with
  // total_params=2851e6, largest_layer_params=32e6, 8 GPUs on 1 node.
  const Result r = ds_estimate("--params 2851e6 --largest-layer 32e6 --gpus-per-node 8");
  INFO(r.out << r.err);
  REQUIRE(r.rc == 0);
  CHECK(contains(r.out, "HW: Setup with 1 node, 8 GPUs per node.\n"));
  CHECK(contains(r.out, "SW: Model with 2851M total params, 32M largest layer params.\n"));
  // ZeRO-3: all six rows as the docs print them.
  for (const char* row :
       {"  71.69GB |   0.12GB | offload_param=cpu , offload_optimizer=cpu , zero_init=1\n",
        " 127.45GB |   0.12GB | offload_param=cpu , offload_optimizer=cpu , zero_init=0\n",
        "  63.72GB |   0.78GB | offload_param=none, offload_optimizer=cpu , zero_init=1\n",
        " 127.45GB |   0.78GB | offload_param=none, offload_optimizer=cpu , zero_init=0\n",
        "   1.43GB |   6.09GB | offload_param=none, offload_optimizer=none, zero_init=1\n",
        " 127.45GB |   6.09GB | offload_param=none, offload_optimizer=none, zero_init=0\n"})
    CHECK(contains(r.out, row));
  // ZeRO-2 with the optimizer offloaded, as documented.
  CHECK(contains(r.out, " 127.45GB |   5.31GB | offload_optimizer=cpu\n"));
  // ZeRO-2 without offload: the docs show 15.93GB per GPU, from an older estimator
  // (4Ψ + 16Ψ/N); today's stage_1_and_2.py has 2Ψ + 18Ψ/N (16-bit params, then 16-bit and fp32
  // grads, fp32 params and Adam states partitioned), which ds-estimate follows: 11.28GB.
  const double p = 2851e6;
  CHECK(std::round((4 * p + 16 * p / 8) / 1073741824.0 * 100) / 100 == 15.93);
  CHECK(contains(r.out, " 127.45GB |  11.28GB | offload_optimizer=none\n"));
}

TEST_CASE("ds-estimate numbers equal the formulas recomputed in float64", "[ds-estimate]") {
  struct Size {
    const char* arg;
    double params;
  };
  const Size sizes[] = {
      {"125M", 125e6}, {"1.3e9", 1.3e9}, {"7B", 7e9}, {"175B", 175e9}, {"12345677", 12345677}};
  struct Hw {
    int64_t gpn, nodes;
  };
  const Hw hws[] = {{1, 1}, {8, 1}, {8, 4}, {3, 2}};
  for (const Size& s : sizes) {
    for (const Hw& hw : hws) {
      for (double factor : {1.5, 2.0}) {
        // A largest layer of about 1/40 of the model, a whole number.
        const double ll = std::floor(s.params / 40);
        const std::string args = std::string("--params ") + s.arg + " --largest-layer " +
                                 std::to_string(static_cast<int64_t>(ll)) + " --gpus-per-node " +
                                 std::to_string(hw.gpn) + " --nodes " + std::to_string(hw.nodes) +
                                 " --buffer-factor " + (factor == 1.5 ? "1.5" : "2");
        INFO(args);
        const rapidjson::Document d = ds_estimate_json(args);
        CHECK(d["params"].GetInt64() == static_cast<int64_t>(s.params));
        CHECK(d["total_gpus"].GetInt64() == hw.gpn * hw.nodes);
        const double gpn = static_cast<double>(hw.gpn), nodes = static_cast<double>(hw.nodes);
        const double nd = gpn * nodes, psi = s.params;
        REQUIRE(d["stages"].Size() == 4);
        CHECK(stage_of(d, 0)["deepspeed"].IsNull());
        CHECK(stage_of(d, 1)["deepspeed"].IsNull());
        check_rows(stage_of(d, 2)["deepspeed"], zero2_expected(psi, gpn, nodes, factor));
        check_rows(stage_of(d, 3)["deepspeed"], zero3_expected(psi, ll, gpn, nodes, factor));
        // ZeRO paper, mixed precision with Adam (K = 12): 16Ψ, 4Ψ + 12Ψ/Nd, 2Ψ + 14Ψ/Nd, 16Ψ/Nd.
        const double paper[4] = {16 * psi, 4 * psi + 12 * psi / nd, 2 * psi + 14 * psi / nd,
                                 16 * psi / nd};
        // dspp fp32 + Adam: params 4Ψ, grads 4Ψ, exp_avg + exp_avg_sq 8Ψ.
        const double fp32[4][3] = {{4 * psi, 4 * psi, 8 * psi},
                                   {4 * psi, 4 * psi, 8 * psi / nd},
                                   {4 * psi, 4 * psi / nd, 8 * psi / nd},
                                   {4 * psi / nd, 4 * psi / nd, 8 * psi / nd}};
        for (int st = 0; st < 4; ++st) {
          INFO("stage " << st);
          const auto& z = stage_of(d, st);
          CHECK(z["zero_paper_mixed_precision"]["gpu_bytes"].GetDouble() ==
                Approx(paper[st]).epsilon(1e-12));
          check_states(z["dspp_fp32_adam"], fp32[st][0], fp32[st][1], fp32[st][2]);
        }
        // Stage 3 in the paper and in dspp fp32: 16 bytes per parameter, spread over Nd.
        CHECK(stage_of(d, 3)["zero_paper_mixed_precision"]["gpu_bytes"].GetDouble() ==
              Approx(stage_of(d, 3)["dspp_fp32_adam"]["gpu_bytes"].GetDouble()).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("ds-estimate reads counts with suffixes and picks stages", "[ds-estimate]") {
  const std::pair<const char*, int64_t> counts[] = {
      {"1.3e9", 1300000000}, {"125M", 125000000}, {"7B", 7000000000},    {"2.7B", 2700000000},
      {"0.5K", 500},         {"350m", 350000000}, {"1T", 1000000000000}, {"124439808", 124439808}};
  for (const auto& [text, want] : counts) {
    INFO(text);
    CHECK(ds_estimate_json(std::string("--params ") + text)["params"].GetInt64() == want);
  }
  const rapidjson::Document one = ds_estimate_json("--params 1B --stage 2");
  REQUIRE(one["stages"].Size() == 1);
  CHECK(one["stages"][0]["stage"].GetInt() == 2);
  // All stages without --largest-layer: stage 3 has no DeepSpeed table, and the text says why.
  const rapidjson::Document all = ds_estimate_json("--params 1B");
  CHECK(all["largest_layer_params"].IsNull());
  CHECK(stage_of(all, 3)["deepspeed"].IsNull());
  CHECK(contains(ds_estimate("--params 1B").out, "pass --largest-layer"));
}

TEST_CASE("ds-estimate --model gpt counts what dspp::GPT builds", "[ds-estimate]") {
  const dspp::GPTConfig configs[] = {
      {/*vocab_size=*/11, /*block_size=*/8, /*n_layer=*/2, /*n_head=*/2, /*n_embd=*/8},
      {96, 64, 2, 4, 128},
      {50, 300, 3, 2, 12},  // wpe is the largest layer
      {1000, 16, 1, 2, 4},  // wte is
      {7, 5, 2, 2, 64},     // mlp.c_fc is
  };
  for (const dspp::GPTConfig& c : configs) {
    const dspp::GPT gpt(c, 1);
    int64_t numel = 0;
    for (dspp::Parameter* p : const_cast<dspp::GPT&>(gpt).parameters()) numel += p->value.numel();
    const std::string args = "--model gpt --n-layer " + std::to_string(c.n_layer) + " --n-embd " +
                             std::to_string(c.n_embd) + " --vocab " + std::to_string(c.vocab_size) +
                             " --context " + std::to_string(c.block_size);
    INFO(args);
    const rapidjson::Document d = ds_estimate_json(args);
    CHECK(d["params"].GetInt64() == numel);
    CHECK(d["largest_layer_params"].GetInt64() == largest_layer(gpt));
    CHECK(d["model"]["n_embd"].GetInt64() == c.n_embd);
  }
  // GPT-2 small, medium, large and XL (vocab 50257, context 1024): Hugging Face's counts.
  const struct {
    int n_layer, n_embd;
    int64_t params;
  } gpt2[] = {
      {12, 768, 124439808}, {24, 1024, 354823168}, {36, 1280, 774030080}, {48, 1600, 1557611200}};
  for (const auto& g : gpt2) {
    const rapidjson::Document d =
        ds_estimate_json("--model gpt --n-layer " + std::to_string(g.n_layer) + " --n-embd " +
                         std::to_string(g.n_embd) + " --vocab 50257 --context 1024");
    CHECK(d["params"].GetInt64() == g.params);
    CHECK(d["largest_layer_params"].GetInt64() == int64_t{50257} * g.n_embd);  // wte
  }
}

TEST_CASE("ds-estimate: bad input is an error naming the flag, exit 2", "[ds-estimate]") {
  const std::pair<const char*, const char*> cases[] = {
      {"--params abc", "--params"},
      {"--params 1.5", "--params"},
      {"--params 0", "--params"},
      {"--params -5", "--params"},
      {"--params 1e15", "--params must be at most"},
      {"--params 7X", "--params"},
      {"--params 1B --nodes 0", "--nodes"},
      {"--params 1B --gpus-per-node two", "--gpus-per-node"},
      {"--params 1B --stage 4", "--stage"},
      {"--params 1B --stage 3", "--largest-layer"},
      {"--params 1B --largest-layer 2B", "--largest-layer"},
      {"--params 1B --buffer-factor 0", "--buffer-factor"},
      {"--params 1B --n-layer 2", "--n-layer"},
      {"--model bert --n-layer 2", "--model"},
      {"--model gpt --n-layer 2 --vocab 10 --context 8", "--n-embd"},
      {"--model gpt --n-layer 2 --n-embd 8 --vocab 10 --context 8 --largest-layer 5",
       "--largest-layer"},
      {"--params 1B --model gpt", "--params and --model"},
      {"", "--params"},
      {"--parms 1B", "parms"},
  };
  for (const auto& [args, flag] : cases) {
    INFO(args);
    const Result r = ds_estimate(args);
    CHECK(r.rc == 2);
    CHECK(r.out.empty());
    CHECK(contains(r.err, flag));
  }
}
