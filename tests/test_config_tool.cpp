// The ds-config command line: output, exit codes, and what goes to stdout versus stderr.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "catch.h"
#include "test_util.h"

namespace {

// CTest runs test cases of this binary in parallel processes: temp names carry the pid.
std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("dspp_ds_config_" + std::to_string(::getpid()) + "_" + name);
}

using Result = ToolRun;

// Runs ds-config with `args` (already shell-quoted where needed).
Result ds_config(const std::string& args) {
  return run_tool(DS_CONFIG_BIN, args);
}

struct TempConfig {
  std::filesystem::path path;
  TempConfig(const std::string& name, const std::string& text) {
    path = temp_path(name + ".json");
    std::ofstream(path) << text;
  }
  ~TempConfig() { std::filesystem::remove(path); }
  std::string arg() const { return "'" + path.string() + "'"; }
};

}  // namespace

TEST_CASE("ds-config check prints the triple on one line", "[config][tool]") {
  TempConfig f("ok", R"({
    // ZeRO-2 on 4 ranks
    "train_batch_size": 32,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_clipping": 1.0,
    "_comment": "kept, with a warning",
  })");
  Result r = ds_config("check " + f.arg() + " --world-size 4");
  INFO(r.err);
  CHECK(r.rc == 0);
  // 32 // 4 // 4 = 2
  CHECK(r.out ==
        "train_batch_size=32 train_micro_batch_size_per_gpu=4 gradient_accumulation_steps=2\n");
  CHECK(r.err.find("warning: unknown key '_comment'") != std::string::npos);
}

TEST_CASE("ds-config check: errors on stderr, exit 1", "[config][tool]") {
  SECTION("a typo") {
    TempConfig f("typo", R"({"train_batch_size": 8, "gradient_clipp1ng": 1.0})");
    Result r = ds_config("check " + f.arg());
    CHECK(r.rc == 1);
    CHECK(r.out.empty());
    CHECK(r.err.find("did you mean 'gradient_clipping'?") != std::string::npos);
  }
  SECTION("a batch mismatch names the dp size and its source") {
    TempConfig f("mismatch", R"({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 3})");
    Result r = ds_config("check " + f.arg() + " --world-size 2 --tp 2");
    CHECK(r.rc == 1);
    // dp = 2 / 2 = 1; gas = 10 // 3 // 1 = 3; 9 != 10
    CHECK(r.err.find("train_batch_size 10 != train_micro_batch_size_per_gpu 3 * "
                     "gradient_accumulation_steps 3 * dp world size 1 = 9 (dp world size 1: "
                     "world size 2 (--world-size) / (tp 2 × pp 1 × sp 1) = 1)") !=
          std::string::npos);
  }
  SECTION("world size not divisible") {
    TempConfig f("divisible", R"({"train_batch_size": 8})");
    Result r = ds_config("check " + f.arg() + " --world-size 6 --pp 4");
    CHECK(r.rc == 1);
    CHECK(r.err.find("world size 6 is not divisible by tp 1 × pp 4 × sp 1 = 4") !=
          std::string::npos);
  }
  SECTION("a missing file") {
    Result r = ds_config("check /nonexistent/ds_config.json");
    CHECK(r.rc == 1);
    CHECK(r.err.find("(no such file)") != std::string::npos);
  }
}

TEST_CASE("ds-config check --auto fills Hugging Face style configs", "[config][tool]") {
  TempConfig f("hf", R"({
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}
  })");
  Result r = ds_config("check " + f.arg() +
                       " --world-size 2 --auto train_micro_batch_size_per_gpu=4 "
                       "--auto gradient_accumulation_steps=2 --auto gradient_clipping=0.5 "
                       "--auto optimizer.params.lr=3e-4");
  INFO(r.err);
  CHECK(r.rc == 0);
  // train = 4 * 2 * 2
  CHECK(r.out ==
        "train_batch_size=16 train_micro_batch_size_per_gpu=4 gradient_accumulation_steps=2\n");

  Result missing = ds_config("check " + f.arg() + " --auto gradient_accumulation_steps=2");
  CHECK(missing.rc == 1);
  CHECK(missing.err.find("train_micro_batch_size_per_gpu: 'auto' was not filled by the host") !=
        std::string::npos);

  Result bad = ds_config("check " + f.arg() + " --auto lr");
  CHECK(bad.rc == 2);
  CHECK(bad.err.find("--auto expects KEY=VALUE") != std::string::npos);
}

TEST_CASE("ds-config check takes a JSON text or base64 as DeepSpeed does", "[config][tool]") {
  Result json = ds_config(R"(check '{"train_micro_batch_size_per_gpu": 2}' --world-size 3)");
  CHECK(json.rc == 0);
  CHECK(json.out ==
        "train_batch_size=6 train_micro_batch_size_per_gpu=2 gradient_accumulation_steps=1\n");
  // {"train_batch_size": 12}
  Result b64 = ds_config("check eyJ0cmFpbl9iYXRjaF9zaXplIjogMTJ9");
  CHECK(b64.rc == 0);
  CHECK(b64.out ==
        "train_batch_size=12 train_micro_batch_size_per_gpu=12 gradient_accumulation_steps=1\n");
}

TEST_CASE("ds-config explain shows values and sources", "[config][tool]") {
  TempConfig f("explain", R"({"train_batch_size": 8, "gradient_clipping": 0.5, "_note": 1})");
  Result r = ds_config("explain " + f.arg());
  INFO(r.err);
  CHECK(r.rc == 0);
  CHECK(r.out.find("# dp world size 1: single process\n") != std::string::npos);
  CHECK(r.out.find("\ntrain_batch_size = 8  (file)\n") != std::string::npos);
  CHECK(r.out.find("\ngradient_clipping = 0.5  (file)\n") != std::string::npos);
  CHECK(r.out.find("\ntrain_micro_batch_size_per_gpu = 8  (derived)\n") != std::string::npos);
  CHECK(r.out.find("\ngradient_accumulation_steps = 1  (derived)\n") != std::string::npos);
  CHECK(r.out.find("\nstrict_config = false  (default)\n") != std::string::npos);
  CHECK(r.out.find("\n_note = 1  (unknown)\n") != std::string::npos);
}

TEST_CASE("ds-config --help, docs and usage errors", "[config][tool]") {
  for (const char* cmd : {"--help", "check --help", "explain --help", "docs --help"}) {
    INFO(cmd);
    Result r = ds_config(cmd);
    CHECK(r.rc == 0);
    CHECK(r.out.find("usage: ds-config") == 0);
  }
  Result docs = ds_config("docs");
  CHECK(docs.rc == 0);
  CHECK(docs.out.find("# Config reference\n") == 0);
  CHECK(docs.out.find("| `train_batch_size` | int, \"auto\" |") != std::string::npos);

  Result none = ds_config("");
  CHECK(none.rc == 2);
  Result unknown = ds_config("frobnicate");
  CHECK(unknown.rc == 2);
  CHECK(unknown.err.find("unknown command 'frobnicate'") != std::string::npos);
  Result no_file = ds_config("check");
  CHECK(no_file.rc == 2);
  CHECK(no_file.err.find("a config FILE is required") != std::string::npos);
  Result bad_option = ds_config("check x.json --world-size many");
  CHECK(bad_option.rc == 2);
}
