// ds-config: check a DeepSpeed config the way initialize() will read it.
//
//   ds-config check FILE [--world-size N] [--tp N] [--pp N] [--sp N] [--auto KEY=VALUE ...]
//   ds-config explain FILE [same options]
//   ds-config docs [--output FILE]
//
// check prints the resolved batch triple on one line and exits 0, or prints the error on stderr
// and exits 1. Warnings go to stderr. Usage errors exit 2.
#include "docs_md.h"

#include <dspp/config.h>
#include <dspp/plugins.h>

#include <boost/program_options.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace po = boost::program_options;

namespace {

constexpr int kExitConfigError = 1;
constexpr int kExitUsage = 2;

const char* kUsage =
    "usage: ds-config <command> [options]\n"
    "\n"
    "commands:\n"
    "  check FILE     validate FILE and print the resolved batch triple\n"
    "  explain FILE   print every key with its value and where it came from\n"
    "  docs           print the config reference (docs/config.md)\n"
    "\n"
    "Run 'ds-config <command> --help' for the options of a command.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Resolves FILE as initialize() would: plugin sections (optimizer.params, scheduler.params) are
// validated against the option schema of the plugin the config names.
dspp::Config load_with_plugins(const std::string& file, const dspp::LoadOptions& opts) {
  static dspp::PluginRegistry registry;  // objects made from it would outlive main otherwise
  return dspp::load_config_with_plugins(file, opts, registry);
}

po::options_description load_options_desc() {
  po::options_description d("options");
  d.add_options()("help,h", "show this help")("world-size", po::value<int64_t>()->default_value(1),
                                              "number of processes (WORLD_SIZE)")(
      "tp", po::value<int64_t>()->default_value(1), "tensor-parallel degree")(
      "pp", po::value<int64_t>()->default_value(1), "pipeline-parallel degree")(
      "sp", po::value<int64_t>()->default_value(1), "sequence-parallel degree")(
      "auto", po::value<std::vector<std::string>>()->composing(),
      "KEY=VALUE: the host's value for a key written \"auto\" (VALUE is JSON; text that is not "
      "JSON is taken as a string). Repeat for several keys.");
  return d;
}

// Splits off the FILE positional and parses the rest of a check/explain command line.
dspp::LoadOptions parse_load_options(const std::string& command,
                                     const std::vector<std::string>& args, std::string& file,
                                     bool& help) {
  po::options_description desc = load_options_desc();
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::string>(), "config file");
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("file", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << "usage: ds-config " << command << " FILE [options]\n\n" << desc << "\n";
    help = true;
    return {};
  }
  if (!vm.count("file")) throw UsageError("ds-config " + command + ": a config FILE is required");
  file = vm["file"].as<std::string>();

  dspp::LoadOptions opts;
  opts.world_size = vm["world-size"].as<int64_t>();
  opts.world_size_source = vm["world-size"].defaulted() ? "single process" : "--world-size";
  opts.tp_size = vm["tp"].as<int64_t>();
  opts.pp_size = vm["pp"].as<int64_t>();
  opts.sp_size = vm["sp"].as<int64_t>();
  if (vm.count("auto")) {
    for (const std::string& kv : vm["auto"].as<std::vector<std::string>>()) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw UsageError("--auto expects KEY=VALUE, got '" + kv + "'");
      }
      std::string value = kv.substr(eq + 1);
      // Numbers, booleans, arrays and quoted strings are JSON already; bare words (a scheduler
      // name) become strings. A value that only starts like JSON is left for the loader to reject.
      bool json_like = !value.empty() && (value[0] == '{' || value[0] == '[' || value[0] == '"' ||
                                          value[0] == '-' || (value[0] >= '0' && value[0] <= '9') ||
                                          value == "true" || value == "false" || value == "null");
      if (!json_like) {
        std::string quoted = "\"";
        for (char c : value) {
          if (c == '"' || c == '\\') quoted += '\\';
          quoted += c;
        }
        value = quoted + "\"";
      }
      opts.auto_values[kv.substr(0, eq)] = value;
    }
  }
  opts.on_warning = [](const dspp::ConfigMessage& m) {
    std::fprintf(stderr, "ds-config: warning: %s\n", m.text.c_str());
  };
  return opts;
}

int run_check(const std::vector<std::string>& args) {
  std::string file;
  bool help = false;
  dspp::LoadOptions opts = parse_load_options("check", args, file, help);
  if (help) return 0;
  dspp::Config cfg = load_with_plugins(file, opts);
  const dspp::BatchTriple& b = cfg.batch();
  std::printf(
      "train_batch_size=%lld train_micro_batch_size_per_gpu=%lld "
      "gradient_accumulation_steps=%lld\n",
      static_cast<long long>(b.train_batch_size), static_cast<long long>(b.micro_batch_per_gpu),
      static_cast<long long>(b.gradient_accumulation_steps));
  return 0;
}

int run_explain(const std::vector<std::string>& args) {
  std::string file;
  bool help = false;
  dspp::LoadOptions opts = parse_load_options("explain", args, file, help);
  if (help) return 0;
  dspp::Config cfg = load_with_plugins(file, opts);
  const dspp::BatchTriple& b = cfg.batch();
  std::cout << "# " << cfg.origin() << "\n# dp world size " << b.dp_world_size << ": "
            << b.dp_source << "\n"
            << cfg.explain();
  return 0;
}

int run_docs(const std::vector<std::string>& args) {
  po::options_description desc("options");
  desc.add_options()("help,h", "show this help")("output,o", po::value<std::string>(),
                                                 "write to this file instead of standard output");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << "usage: ds-config docs [options]\n\nPrints docs/config.md, generated from the "
                 "config registry.\n\n"
              << desc << "\n";
    return 0;
  }
  std::string md = dspp::tools::config_reference_markdown(dspp::ConfigSchema::core());
  if (!vm.count("output")) {
    std::cout << md;
    return 0;
  }
  const std::string path = vm["output"].as<std::string>();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << md;
  out.close();
  if (!out) {
    std::fprintf(stderr, "ds-config: error: cannot write %s\n", path.c_str());
    return kExitConfigError;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return kExitUsage;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (command == "--help" || command == "-h" || command == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (command == "check") return run_check(args);
    if (command == "explain") return run_explain(args);
    if (command == "docs") return run_docs(args);
    std::fprintf(stderr, "ds-config: unknown command '%s'\n\n%s", command.c_str(), kUsage);
    return kExitUsage;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return kExitUsage;
  } catch (const po::error& e) {
    std::fprintf(stderr, "ds-config %s: %s\n", command.c_str(), e.what());
    return kExitUsage;
  } catch (const dspp::Error& e) {
    std::fprintf(stderr, "ds-config: error: %s\n", e.what());
    return kExitConfigError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ds-config: error: %s\n", e.what());
    return kExitConfigError;
  }
}
