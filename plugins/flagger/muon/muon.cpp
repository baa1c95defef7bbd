// flagger/muon: marks the parameters optimizer/muon orthogonalises (DSPP_PARAM_USE_MUON).
//
// DeepSpeed's rule (deepspeed/__init__.py, set_optimizer_flags, when optimizer.type is Muon):
//   use_muon = ndim >= 2 and not any(pattern in name.lower() for pattern in ("embed", "lm_head"))
// where ndim is the whole parameter's (its layer shape, not a ZeRO-3 partition's). Here the
// patterns are the option `exclude` (default DeepSpeed's two), compared case-insensitively. The
// flag is set or cleared on every parameter; other flag bits are left as they are.
//
// Note for GPT-2 names: "transformer.wte.weight" and "transformer.wpe.weight" contain neither
// pattern, so under DeepSpeed's rule the embeddings (and the lm_head tied to wte) get Muon; add
// "wte" and "wpe" to `exclude` to keep them on AdamW.
#include <dspp/kinds/flagger.h>
#include <dspp/kinds/optimizer.h>
#include <dspp/plugin.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using dspp::plugin::ConfigReader;
using dspp::plugin::StatusError;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class MuonFlagger final : public dspp::Flagger {
 public:
  MuonFlagger(const dspp_host_api* host, ConfigReader cfg) : host_(host) {
    if (!cfg.has("exclude")) {
      exclude_ = {"embed", "lm_head"};
      return;
    }
    const std::string text = cfg.get_json("exclude");
    rapidjson::Document d;
    d.Parse(text.c_str());
    bool ok = !d.HasParseError() && d.IsArray();
    if (ok) {
      for (const auto& v : d.GetArray()) {
        ok = ok && v.IsString() && v.GetStringLength() > 0;
        if (ok) exclude_.push_back(lower(std::string(v.GetString(), v.GetStringLength())));
      }
    }
    // An empty pattern would match every name and switch Muon off for the whole model.
    if (!ok)
      throw StatusError(DSPP_ERR_INVALID_ARGUMENT,
                        "flagger/muon: exclude must be an array of non-empty strings (name "
                        "substrings, case-insensitive), got " +
                            text);
  }

  dspp_status apply(dspp::FlaggerParam* params, int32_t num_params) noexcept override {
    return dspp::plugin::guard(host_, [&] {
      if (num_params < 0 || (num_params > 0 && !params))
        throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "flagger/muon: bad parameter list");
      int64_t muon_count = 0, muon_elems = 0, adam_count = 0, adam_elems = 0;
      int64_t by_ndim = 0, by_name = 0;
      std::vector<std::string> named;  // the matrices a pattern kept off Muon, for the log
      for (int32_t i = 0; i < num_params; ++i) {
        dspp::FlaggerParam& p = params[i];
        const std::string name = p.name ? p.name : "";
        if (p.ndim < 0 || p.ndim > DSPP_MAX_DIMS)
          throw StatusError(DSPP_ERR_INVALID_ARGUMENT, "flagger/muon: parameter '" + name +
                                                           "' has ndim " + std::to_string(p.ndim));
        int64_t elems = 1;
        for (int32_t d = 0; d < p.ndim; ++d) elems *= p.shape[d];
        const std::string lname = lower(name);
        bool excluded = false;
        for (const std::string& pat : exclude_)
          excluded = excluded || lname.find(pat) != std::string::npos;
        const bool use = p.ndim >= 2 && !excluded;
        if (use) {
          p.flags |= DSPP_PARAM_USE_MUON;
          ++muon_count;
          muon_elems += elems;
          continue;
        }
        p.flags &= ~DSPP_PARAM_USE_MUON;
        ++adam_count;
        adam_elems += elems;
        if (p.ndim < 2) {
          ++by_ndim;
        } else {
          ++by_name;
          named.push_back(name);
        }
      }
      std::string msg = "Muon: " + std::to_string(muon_count) + " parameters (" +
                        std::to_string(muon_elems) +
                        " elements); AdamW: " + std::to_string(adam_count) + " parameters (" +
                        std::to_string(adam_elems) + " elements): " + std::to_string(by_ndim) +
                        " with ndim < 2, " + std::to_string(by_name) + " excluded by name";
      const size_t shown = std::min<size_t>(named.size(), 8);
      for (size_t k = 0; k < shown; ++k) msg += (k == 0 ? " (" : ", ") + named[k];
      if (named.size() > shown) msg += ", ...";
      if (shown > 0) msg += ")";
      std::string pats;
      for (const std::string& pat : exclude_) pats += (pats.empty() ? "" : ", ") + pat;
      msg += "; exclude = [" + pats + "]";
      dspp::plugin::log(host_, DSPP_LOG_INFO, "flagger/muon", msg);
    });
  }

 private:
  const dspp_host_api* host_;
  std::vector<std::string> exclude_;
};

const dspp_option_desc kOptions[] = {
    dspp_option_desc{"exclude", DSPP_VALUE_ARRAY, "[\"embed\", \"lm_head\"]",
                     "Name substrings (case-insensitive) that keep a matrix off Muon; DeepSpeed's "
                     "are \"embed\" and \"lm_head\".",
                     0, 0.0, 0.0, nullptr},
};

const dspp_plugin_desc kPlugins[] = {
    dspp::plugin::describe<dspp::Flagger, MuonFlagger>(
        DSPP_KIND_FLAGGER, "muon", "1.0.0",
        "Flags use_muon on parameters of ndim >= 2 whose name contains no exclude pattern "
        "(DeepSpeed's set_optimizer_flags).",
        kOptions),
};

}  // namespace

DSPP_PLUGIN_LIBRARY("dspp_flagger_muon", kPlugins)
