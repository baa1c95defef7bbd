// Engine::save_checkpoint / load_checkpoint: the engine's side of checkpoints. The ZeRO stage says
// which part of the flat layout this rank saves and restores (its shard); the engine maps that
// part onto parameters and writes it as pieces of whole logical tensors ("module/<param>",
// "optimizer/<state>/<param>"), so a reader at any other world size or stage picks out its own
// elements (core/checkpoint/ does the files, checksums and crash safety).
#include <dspp/checkpoint.h>
#include <dspp/engine.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "log/log.h"
#include "precision/loss_scaler.h"

namespace dspp {
namespace {

namespace fs = std::filesystem;

dspp_tensor_view f32_view(float* data, int64_t n) {
  dspp_tensor_view v{};
  v.data = data;
  v.dtype = DSPP_F32;
  v.ndim = 1;
  v.shape[0] = n;
  v.device = cpu_device();
  return v;
}

int64_t numel_of_view(const dspp_tensor_view& v) {
  int64_t n = 1;
  for (int32_t d = 0; d < v.ndim; ++d) n *= v.shape[d];
  return n;
}

// Every rank's string, in rank order (two all-gathers: lengths, then the padded bytes).
std::vector<std::string> all_gather_strings(ProcessGroup& g, const std::string& mine) {
  Tensor len = Tensor::empty({1}, DSPP_I64);
  len.data<int64_t>()[0] = static_cast<int64_t>(mine.size());
  Tensor lens = Tensor::empty({g.size()}, DSPP_I64);
  g.all_gather(len, lens);
  int64_t most = 1;
  for (int r = 0; r < g.size(); ++r) most = std::max(most, lens.data<int64_t>()[r]);
  Tensor in = Tensor::zeros({most}, DSPP_U8);
  std::copy(mine.begin(), mine.end(), in.data<char>());
  Tensor all = Tensor::empty({most * g.size()}, DSPP_U8);
  g.all_gather(in, all);
  std::vector<std::string> out;
  for (int r = 0; r < g.size(); ++r) {
    out.emplace_back(all.data<char>() + r * most, static_cast<size_t>(lens.data<int64_t>()[r]));
  }
  return out;
}

// The part of [lo, hi) that also lies in [a, b), or an empty range.
std::pair<int64_t, int64_t> clip(int64_t lo, int64_t hi, int64_t a, int64_t b) {
  return {std::max(lo, a), std::min(hi, b)};
}

// Host memory for what a checkpoint reads and writes: a host view is used in place; one in GPU
// memory is copied into a host buffer (all of it: the states and shard values are flat fp32), and
// after a load the buffers go back to the device.
class HostStaging {
 public:
  float* host(const dspp_tensor_view& v) {
    if (v.device.type == DSPP_DEVICE_CPU) return static_cast<float*>(v.data);
    for (Entry& e : entries_) {
      if (e.device.data == v.data) return e.host.data<float>();
    }
    Entry e{v, Tensor::wrap(v).to(cpu_device())};
    entries_.push_back(e);
    return entries_.back().host.data<float>();
  }
  // Copies every buffer back into its device view (after a load filled them).
  void write_back() {
    for (Entry& e : entries_) Tensor::wrap(e.device).copy_from(e.host);
  }

 private:
  struct Entry {
    dspp_tensor_view device;
    Tensor host;
  };
  std::vector<Entry> entries_;
};

// Calls fn(state name, parameter index, lo, hi, state elements at lo) for the elements [lo, hi)
// of every trained parameter that lie in [a, b) and in the optimizer's states.
template <class Fn>
void for_each_state_piece(Optimizer* opt, const std::vector<ZeroParam>& params, int64_t opt_begin,
                          int64_t a, int64_t b, HostStaging& staging, Fn&& fn) {
  for (int32_t k = 0; opt && k < opt->num_states(); ++k) {
    const char* sname = nullptr;
    dspp_tensor_view v{};
    check_plugin(opt->state(k, &sname, &v), "optimizer state");
    const int64_t oe = opt_begin + numel_of_view(v);
    float* base = staging.host(v);
    for (size_t i = 0; i < params.size(); ++i) {
      const ZeroParam& z = params[i];
      if (z.group < 0) continue;  // not trained: no state
      auto [lo, hi] = clip(z.offset_in_flat, z.offset_in_flat + z.numel, a, b);
      std::tie(lo, hi) = clip(lo, hi, opt_begin, oe);
      if (lo < hi) fn(sname, i, lo, hi, base + (lo - opt_begin));
    }
  }
}

}  // namespace

std::string Engine::save_checkpoint(const std::string& save_dir, const std::string& tag_in,
                                    const std::string& client_state, bool save_latest) {
  const std::string tag = tag_in.empty() ? "global_step" + std::to_string(global_steps_) : tag_in;
  if (tag.find('/') != std::string::npos || tag == "." || tag == "..") {
    throw Error(Errc::kInvalidArgument, "save_checkpoint: tag '" + tag + "' must be a folder name");
  }
  rapidjson::Document client;
  client.Parse(client_state.c_str());
  if (client.HasParseError() || !client.IsObject()) {
    throw Error(Errc::kInvalidArgument, "save_checkpoint: client_state must be a JSON object");
  }
  const fs::path dir = fs::path(save_dir) / tag;
  ZeroShard sh{};
  check_plugin(zero_->shard(&sh), "zero shard");
  HostStaging staging;
  float* values = staging.host(sh.values);

  CheckpointWriter w;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ZeroParam& z = zero_params_[i];
    const auto [lo, hi] = clip(z.offset_in_flat, z.offset_in_flat + z.numel, sh.begin, sh.end);
    if (lo >= hi) continue;
    w.add_piece("module/" + params_[i]->name, f32_view(values + (lo - sh.begin), hi - lo),
                params_[i]->shape, lo - z.offset_in_flat);
  }
  // Each rank writes only its shard's part of the states (at stage 0 they cover every element).
  for_each_state_piece(
      optimizer_.impl.get(), zero_params_, sh.optimizer_begin, sh.begin, sh.end, staging,
      [&](const char* state, size_t i, int64_t lo, int64_t hi, float* at) {
        w.add_piece(std::string("optimizer/") + state + "/" + params_[i]->name,
                    f32_view(at, hi - lo), params_[i]->shape, lo - zero_params_[i].offset_in_flat);
      });
  const int rank = static_cast<int>(mesh_.rank);
  const ShardSummary summary = w.write_shard(dir, rank);
  const std::vector<std::string> all =
      all_gather_strings(*grad_group_, shard_summary_to_json(summary));
  if (rank == 0) {
    std::vector<ShardSummary> shards;
    for (const std::string& s : all) shards.push_back(shard_summary_from_json(s));
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> out(buf);
    out.StartObject();
    for (auto [key, v] :
         {std::pair{"global_steps", global_steps_}, std::pair{"global_samples", global_samples_},
          std::pair{"micro_steps", micro_steps_}, std::pair{"skipped_steps", skipped_steps_},
          std::pair{"scheduler_steps", scheduler_steps_}}) {
      out.Key(key);
      out.Int64(v);
    }
    // The loss scaler's changing state (DeepSpeed pickles the scaler into its optimizer states),
    // so a resumed fp16 run goes on with the same scale and the same distance to the next raise.
    // Written under fp16 only: other precisions have no scale to keep.
    const precision::LossScalerState& ls = scaler_->state();
    if (working_dtype_ == DSPP_F16) {
      out.Key("loss_scaler");
      out.StartObject();
      out.Key("cur_scale");
      out.Double(ls.cur_scale);
      out.Key("cur_iter");
      out.Int64(ls.cur_iter);
      out.Key("last_overflow_iter");
      out.Int64(ls.last_overflow_iter);
      out.Key("cur_hysteresis");
      out.Int64(ls.cur_hysteresis);
      out.EndObject();
    }
    out.Key("client_state");
    client.Accept(out);
    out.EndObject();
    CheckpointMeta meta;
    meta.tag = tag;
    meta.world = {static_cast<int>(mesh_.world_size), static_cast<int>(mesh_.dp_size),
                  static_cast<int>(mesh_.tp_size), static_cast<int>(mesh_.pp_size)};
    meta.zero_stage = static_cast<int>(config_.get_int("zero_optimization.stage"));
    meta.config_json = config_.to_json();
    meta.counters_json = buf.GetString();
    write_manifest(dir, shards, meta);
  }
  // `latest` moves only once every shard and the manifest are on disk.
  grad_group_->barrier();
  if (save_latest && rank == 0) write_latest(save_dir, tag);
  grad_group_->barrier();
  if (rank == 0) log::info("engine", "saved checkpoint " + dir.string());
  return dir.string();
}

Engine::LoadedCheckpoint Engine::load_checkpoint(const std::string& load_dir,
                                                 const std::string& tag_in,
                                                 bool load_optimizer_states,
                                                 bool load_lr_scheduler_states,
                                                 bool load_module_only) {
  std::string tag = tag_in;
  if (tag.empty()) {
    const std::optional<std::string> latest = read_latest(load_dir);
    if (!latest) {
      if (mesh_.rank == 0) {
        log::warn("engine", "load_checkpoint: no 'latest' file in " + load_dir +
                                " (pass a tag to load a specific one); nothing loaded");
      }
      return {};
    }
    tag = *latest;
  }
  const fs::path dir = fs::path(load_dir) / tag;
  CheckpointReader r(dir);
  ZeroShard sh{};
  check_plugin(zero_->shard(&sh), "zero shard");
  HostStaging staging;
  float* values = staging.host(sh.values);

  auto require = [&](const std::string& name, const Parameter& p, const char* hint) {
    if (!r.has(name)) {
      throw Error(Errc::kInvalidArgument,
                  "checkpoint " + dir.string() + " has no tensor '" + name + "'" + hint);
    }
    if (r.shape(name) != p.shape) {
      throw Error(Errc::kInvalidArgument, "checkpoint " + dir.string() + ": '" + name +
                                              "' has another shape than the model's parameter");
    }
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const ZeroParam& z = zero_params_[i];
    const auto [lo, hi] = clip(z.offset_in_flat, z.offset_in_flat + z.numel, sh.begin, sh.end);
    if (lo >= hi) continue;
    const std::string name = "module/" + params_[i]->name;
    require(name, *params_[i], " (a checkpoint of another model?)");
    r.read_range(name, lo - z.offset_in_flat, hi - lo, values + (lo - sh.begin), DSPP_F32);
  }
  if (load_optimizer_states && !load_module_only) {
    // All of the optimizer's elements (at stage 0 it steps every one, not just the shard's).
    for_each_state_piece(
        optimizer_.impl.get(), zero_params_, sh.optimizer_begin, 0, INT64_MAX, staging,
        [&](const char* state, size_t i, int64_t lo, int64_t hi, float* at) {
          const std::string name = std::string("optimizer/") + state + "/" + params_[i]->name;
          require(name, *params_[i],
                  " (saved with another optimizer? load_optimizer_states=false skips the states)");
          r.read_range(name, lo - zero_params_[i].offset_in_flat, hi - lo, at, DSPP_F32);
        });
  }
  staging.write_back();
  check_plugin(zero_->after_load(), "zero after_load");

  rapidjson::Document counters;
  counters.Parse(r.manifest().meta.counters_json.c_str());
  auto counter = [&](const char* key) -> int64_t {
    if (!counters.IsObject() || !counters.HasMember(key) || !counters[key].IsInt64()) {
      throw Error(Errc::kInvalidArgument,
                  "checkpoint " + dir.string() + ": manifest counters lack '" + key + "'");
    }
    return counters[key].GetInt64();
  };
  if (!load_module_only) {
    global_steps_ = counter("global_steps");
    global_samples_ = counter("global_samples");
    micro_steps_ = counter("micro_steps");
    skipped_steps_ = counter("skipped_steps");
    if (load_lr_scheduler_states) scheduler_steps_ = counter("scheduler_steps");
    // A checkpoint of a run that was not fp16 has no scaler state: the scaler stays as the config
    // made it (and one of an fp16 run does not move a bf16/fp32 run's scale of 1).
    if (working_dtype_ == DSPP_F16 && counters.HasMember("loss_scaler") &&
        counters["loss_scaler"].IsObject()) {
      const rapidjson::Value& ls = counters["loss_scaler"];
      auto field = [&](const char* key) -> const rapidjson::Value& {
        if (!ls.HasMember(key) || !ls[key].IsNumber()) {
          throw Error(Errc::kInvalidArgument,
                      "checkpoint " + dir.string() + ": manifest loss_scaler lacks '" + key + "'");
        }
        return ls[key];
      };
      precision::LossScalerState st;
      st.cur_scale = field("cur_scale").GetDouble();
      st.cur_iter = field("cur_iter").GetInt64();
      st.last_overflow_iter = field("last_overflow_iter").GetInt64();
      st.cur_hysteresis = field("cur_hysteresis").GetInt64();
      scaler_->load_state(st);
    }
  }
  LoadedCheckpoint out;
  out.path = dir.string();
  out.client_state = "{}";
  if (counters.IsObject() && counters.HasMember("client_state")) {
    rapidjson::StringBuffer buf;
    rapidjson::Writer<rapidjson::StringBuffer> w(buf);
    counters["client_state"].Accept(w);
    out.client_state = buf.GetString();
  }
  if (mesh_.rank == 0) log::info("engine", "loaded checkpoint " + out.path);
  return out;
}

}  // namespace dspp
