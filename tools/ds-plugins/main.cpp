// ds-plugins: what plugins does dspp find, and is this plugin library sound?
//
//   ds-plugins list [--verbose] [--path DIR]...   every plugin on the search path, one per line
//   ds-plugins check LIB.so...                     load each library alone, print its manifest,
//                                                  create and destroy each plugin twice
#include <dspp/error.h>
#include <dspp/plugins.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "plugins/search_path.h"

namespace po = boost::program_options;

namespace {

const char* kUsage =
    "usage: ds-plugins list [--verbose] [--path DIR]...\n"
    "       ds-plugins check LIB.so...\n"
    "\n"
    "list   every plugin dspp finds, one line each: kind, name, version, ABI, file.\n"
    "       Folders are searched in this order: built-ins next to libdspp, --path folders\n"
    "       (like plugin_paths in a config), DSPP_PLUGIN_PATH (colon-separated), the install's\n"
    "       plugin folder.\n"
    "check  load each library alone, print its manifest, then create and destroy each of its\n"
    "       plugins twice with an empty config; exits non-zero with the error on failure.\n";

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// One option: "  lr  float  default 0.001  Step size. [min 0] [choices a|b] [auto]".
void print_option(const dspp::KeySpec& o, size_t key_width) {
  std::string line = "    " + o.path;
  line.append(key_width + 2 - std::min(key_width, o.path.size()), ' ');
  std::string type = dspp::value_type_name(o.type);
  line += type + std::string(8 - std::min<size_t>(7, type.size()), ' ');
  line += "default " + (o.default_json.empty() ? std::string("none") : o.default_json);
  if (!o.doc.empty()) line += "  " + o.doc;
  if (o.min) line += " [min " + number(*o.min) + "]";
  if (o.max) line += " [max " + number(*o.max) + "]";
  if (!o.choices.empty()) {
    line += " [choices ";
    for (size_t i = 0; i < o.choices.size(); ++i) line += (i ? "|" : "") + o.choices[i];
    line += "]";
  }
  if (o.allow_auto) line += " [\"auto\" allowed]";
  std::cout << line << "\n";
}

void print_options(const dspp::PluginInfo& p) {
  if (p.options.empty()) {
    std::cout << "    (no options)\n";
    return;
  }
  size_t width = 0;
  for (const dspp::KeySpec& o : p.options) width = std::max(width, o.path.size());
  for (const dspp::KeySpec& o : p.options) print_option(o, width);
}

int run_list(const std::vector<std::string>& args) {
  po::options_description opts("ds-plugins list");
  opts.add_options()("help,h", "show this help")(
      "verbose,v", "also print the search folders, each plugin's description and options")(
      "path,p", po::value<std::vector<std::string>>()->composing(),
      "an extra folder to search (repeatable), searched like plugin_paths in a config");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << opts;
    return 0;
  }
  const bool verbose = vm.count("verbose") > 0;
  std::vector<std::string> extra;
  if (vm.count("path")) extra = vm["path"].as<std::vector<std::string>>();

  std::vector<dspp::PluginFolder> candidates = dspp::plugin_search_candidates(extra);
  if (verbose) {
    std::cout << "plugin folders, in search order:\n";
    for (const dspp::PluginFolder& f : candidates) {
      std::cout << "  " << f.origin << std::string(18 - std::min<size_t>(17, f.origin.size()), ' ')
                << f.path << (f.exists ? "" : "  (missing)") << "\n";
    }
  }

  dspp::PluginRegistry registry;
  std::string scan_error;
  try {
    registry.scan(dspp::PluginRegistry::search_path(extra));
  } catch (const dspp::Error& e) {
    scan_error = e.what();  // the good libraries are registered all the same
  }

  std::vector<const dspp::PluginInfo*> plugins = registry.list();
  if (plugins.empty()) {
    std::cout << "no plugins found; looked in:";
    for (const dspp::PluginFolder& f : candidates)
      std::cout << "\n  " << f.path << " (" << f.origin << (f.exists ? "" : ", missing") << ")";
    std::cout << "\n";
  }
  size_t kind_w = 0, name_w = 0, version_w = 0;
  for (const dspp::PluginInfo* p : plugins) {
    kind_w = std::max(kind_w, p->kind.size());
    name_w = std::max(name_w, p->name.size());
    version_w = std::max(version_w, p->version.size());
  }
  auto pad = [](const std::string& s, size_t w) { return s + std::string(w - s.size() + 2, ' '); };
  for (const dspp::PluginInfo* p : plugins) {
    std::cout << pad(p->kind, kind_w) << pad(p->name, name_w) << pad(p->version, version_w)
              << "abi " << p->abi_major << "." << p->abi_minor << "  " << p->file << "\n";
    if (verbose) {
      if (!p->description.empty()) std::cout << "    " << p->description << "\n";
      std::cout << "    build " << p->build_id << "\n";
      print_options(*p);
    }
  }
  if (!scan_error.empty()) {
    std::cerr << "ds-plugins: error: " << scan_error << "\n";
    return 1;
  }
  return 0;
}

// Loads `file` into a registry of its own and exercises every plugin it provides.
int check_one(const std::string& file) {
  dspp::PluginRegistry registry;
  registry.load_library(file);
  std::vector<const dspp::PluginInfo*> plugins = registry.list();
  if (plugins.empty()) {
    std::cerr << "ds-plugins: error: " << file << ": the library provides no plugins\n";
    return 1;
  }
  std::cout << "library " << plugins.front()->library_name << "  " << plugins.front()->file << "\n";
  for (const dspp::PluginInfo* p : plugins) {
    std::cout << "  " << p->kind << "/" << p->name << "  version " << p->version << "  abi "
              << p->abi_major << "." << p->abi_minor << "  build " << p->build_id << "\n";
    if (!p->description.empty()) std::cout << "    " << p->description << "\n";
    print_options(*p);
  }
  for (const dspp::PluginInfo* p : plugins) {
    for (int round = 0; round < 2; ++round) {
      // The interface type does not matter here: the object is only created and destroyed.
      std::shared_ptr<void> object = registry.create<void>(p->kind, p->name, nullptr);
      object.reset();
    }
    std::cout << "ok: " << p->kind << "/" << p->name << " created and destroyed twice\n";
  }
  return 0;
}

int run_check(const std::vector<std::string>& args) {
  po::options_description opts("ds-plugins check");
  opts.add_options()("help,h", "show this help")("library", po::value<std::vector<std::string>>(),
                                                 "plugin library to check");
  po::positional_options_description pos;
  pos.add("library", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (!vm.count("library")) {
    std::cerr << "ds-plugins check: name a plugin library (LIB.so)\n";
    return 2;
  }
  int rc = 0;
  for (const std::string& file : vm["library"].as<std::vector<std::string>>()) {
    try {
      rc = std::max(rc, check_one(file));
    } catch (const dspp::Error& e) {
      std::cerr << "ds-plugins: error: " << e.what() << "\n";
      rc = 1;
    }
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "list") return run_list(args);
    if (command == "check") return run_check(args);
    std::cerr << "ds-plugins: unknown command '" << command << "'\n" << kUsage;
    return 2;
  } catch (const po::error& e) {
    std::cerr << "ds-plugins " << command << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "ds-plugins: error: " << e.what() << "\n";
    return 1;
  }
}
