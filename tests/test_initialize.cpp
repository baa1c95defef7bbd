// initialize(): DeepSpeed's conflict rules, its step order around zero::Init, and routing.
#include <dspp/dist.h>
#include <dspp/initialize.h>
#include <dspp/plugins.h>

#include <cstdlib>
#include <string>

#include "catch.h"
#include "engine/initialize_steps.h"
#include "multiprocess.h"

namespace {

// A two-parameter model that records whether zero::Init was active when initialize() read it.
class TinyModel : public dspp::Module {
 public:
  TinyModel() {
    w_.name = "fc.weight";
    w_.shape = {4, 3};
    b_.name = "fc.bias";
    b_.shape = {4};
  }
  std::string type_name() const override { return "TinyModel"; }
  std::vector<dspp::Parameter*> parameters() override {
    saw_init_active = dspp::zero::init_context_active();
    ++calls;
    return {&w_, &b_};
  }
  bool saw_init_active = true;
  int calls = 0;

 private:
  dspp::Parameter w_, b_;
};

class TinyPipe : public dspp::PipelineModule {
 public:
  std::string type_name() const override { return "TinyPipe"; }
  std::vector<dspp::Parameter*> parameters() override { return {}; }
};

class FakeMpu : public dspp::ModelParallelUnit {
 public:
  int data_parallel_world_size() const override { return 1; }
  int data_parallel_rank() const override { return 0; }
  int model_parallel_world_size() const override { return 1; }
};

dspp::InitializeArgs base_args() {
  dspp::InitializeArgs a;
  a.model = std::make_shared<TinyModel>();
  // Only the ZeRO stage every engine needs; no other plugin is named.
  a.plugins = std::make_shared<dspp::PluginRegistry>();
  a.plugins->load_library(DSPP_BINARY_DIR "/lib/dspp/plugins/libdspp_zero_stage0.so");
  return a;
}

std::string error_of(const dspp::InitializeArgs& a) {
  try {
    dspp::initialize(a);
  } catch (const dspp::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("initialize routes a plain model to Engine with the resolved batch triple") {
  auto a = base_args();
  a.config = R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2})";
  auto [engine, optimizer, dataloader, lr_scheduler] = dspp::initialize(a);
  REQUIRE(engine);
  CHECK(engine->kind() == dspp::EngineKind::kEngine);
  CHECK(engine->train_batch_size() == 8);
  CHECK(engine->train_micro_batch_size_per_gpu() == 4);
  CHECK(engine->gradient_accumulation_steps() == 2);
  CHECK(engine->mesh().dp_size == 1);
  CHECK(optimizer == nullptr);  // none in the config, none given
  CHECK(dataloader == nullptr);
  CHECK(lr_scheduler == nullptr);
}

TEST_CASE("route: PipelineModule -> PipelineEngine, hybrid_engine.enabled -> HybridEngine") {
  using dspp::init_steps::route;
  auto plain = dspp::Config::from_string(R"({"train_batch_size": 2})");
  auto hybrid = dspp::Config::from_string(R"({"train_batch_size": 2,
                                               "hybrid_engine": {"enabled": true}})");
  TinyModel model;
  TinyPipe pipe;
  CHECK(route(model, plain) == dspp::EngineKind::kEngine);
  CHECK(route(model, hybrid) == dspp::EngineKind::kHybridEngine);
  CHECK(route(pipe, plain) == dspp::EngineKind::kPipelineEngine);
  // Routes whose engines are not built yet are refused with a message naming them.
  auto a = base_args();
  a.model = std::make_shared<TinyPipe>();
  a.config = R"({"train_batch_size": 2})";
  CHECK(contains(error_of(a), "PipelineEngine"));
}

TEST_CASE("initialize suspends zero::Init while it runs and restores it after") {
  auto a = base_args();
  auto model = std::make_shared<TinyModel>();
  a.model = model;
  a.config = R"({"train_batch_size": 2})";
  dspp::zero::Init scope;
  REQUIRE(dspp::zero::init_context_active());
  dspp::initialize(a);
  REQUIRE(model->calls > 0);
  CHECK_FALSE(model->saw_init_active);
  CHECK(dspp::zero::init_context_active());
  // Restored on the error path too.
  a.config = R"({"gradient_accumulation_steps": 2})";  // no batch size: an error
  CHECK_FALSE(error_of(a).empty());
  CHECK(dspp::zero::init_context_active());
}

TEST_CASE("initialize rejects conflicting or missing inputs with DeepSpeed's meaning") {
  dspp::CommandLineArgs cli;
  cli.deepspeed_config = R"({"train_batch_size": 2})";

  SECTION("no model") {
    auto a = base_args();
    a.model = nullptr;
    a.config = R"({"train_batch_size": 2})";
    CHECK(contains(error_of(a), "model is required"));
  }
  SECTION("no config anywhere") {
    auto a = base_args();
    CHECK(contains(error_of(a), "no config"));
  }
  SECTION("config both in args and as the config argument") {
    auto a = base_args();
    a.args = &cli;
    a.config = R"({"train_batch_size": 2})";
    CHECK(contains(error_of(a), "both in args.deepspeed_config"));
  }
  SECTION("deepscale_config and deepspeed_config together") {
    dspp::CommandLineArgs both = cli;
    both.deepscale_config = R"({"train_batch_size": 2})";
    auto a = base_args();
    a.args = &both;
    CHECK(contains(error_of(a), "deepscale_config"));
  }
  SECTION("mpu with a PipelineModule") {
    auto a = base_args();
    a.model = std::make_shared<TinyPipe>();
    a.mpu = std::make_shared<FakeMpu>();
    a.config = R"({"train_batch_size": 2})";
    CHECK(contains(error_of(a), "mpu must be null"));
  }
  SECTION("config text and config_object together") {
    auto a = base_args();
    a.config = R"({"train_batch_size": 2})";
    a.config_object = dspp::Config::from_string(R"({"train_batch_size": 2})");
    CHECK(contains(error_of(a), "config_object"));
  }
  SECTION("mesh_param that does not multiply to the world size") {
    auto a = base_args();
    a.config = R"({"train_batch_size": 2})";
    a.mesh_param = std::make_pair(int64_t{2}, int64_t{2});
    CHECK(contains(error_of(a), "mesh_param (2, 2)"));
  }
}

TEST_CASE("initialize takes the config from args, config_params, or config_object") {
  dspp::CommandLineArgs cli;
  cli.deepspeed_config = R"({"train_batch_size": 6})";
  auto a = base_args();
  a.args = &cli;
  CHECK(dspp::initialize(a).engine->train_batch_size() == 6);

  auto b = base_args();
  b.config_params = R"({"train_batch_size": 10})";
  CHECK(dspp::initialize(b).engine->train_batch_size() == 10);
  // DeepSpeed: `config` wins over the older `config_params`.
  b.config = R"({"train_batch_size": 12})";
  CHECK(dspp::initialize(b).engine->train_batch_size() == 12);

  auto c = base_args();
  c.config_object = dspp::Config::from_string(R"({"train_micro_batch_size_per_gpu": 3})");
  CHECK(dspp::initialize(c).engine->train_batch_size() == 3);
}

TEST_CASE("initialize reads the launch environment and names its source") {
  // A short DSPP_TIMEOUT and a port nobody serves: the errors must come fast and name the rank.
  ::setenv("DSPP_TIMEOUT", "0.005", 1);
  ::setenv("MASTER_PORT", std::to_string(mp::free_port()).c_str(), 1);
  ::setenv("RANK", "1", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  auto a = base_args();
  a.config = R"({"train_batch_size": 2})";
  std::string err = error_of(a);
  CHECK(contains(err, "rank 0's store at 127.0.0.1:"));
  CHECK(contains(err, "did not answer"));

  // Rank 0 serves the store itself and waits for rank 1, which never comes.
  ::setenv("RANK", "0", 1);
  err = error_of(a);
  CHECK(contains(err, "rank 1 of 2 did not arrive"));
  CHECK_FALSE(dspp::is_initialized());

  a.dist_init_required = false;
  err = error_of(a);
  CHECK(contains(err, "dist_init_required=false"));
  a.dist_init_required.reset();

  ::setenv("RANK", "3", 1);
  err = error_of(a);
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("MASTER_PORT");
  ::unsetenv("DSPP_TIMEOUT");
  CHECK(contains(err, "RANK=3 is outside WORLD_SIZE=2"));
}
