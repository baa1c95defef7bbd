// The plugin registry against real plugin libraries built from tests/test_plugins/: loading, ABI
// checks, duplicates, lookup, errors and their messages, object lifetime, option schemas, digest.
#include <dlfcn.h>

#include <dspp/kinds/optimizer.h>
#include <dspp/kinds/scheduler.h>
#include <dspp/plugins.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "catch.h"
#include "log/log.h"
#include "plugins/options.h"
#include "plugins/search_path.h"

namespace fs = std::filesystem;
using dspp::PluginRegistry;

namespace {

std::string canon(const std::string& path) {
  return fs::canonical(path).string();
}

// Runs fn, which must throw dspp::Error(kPlugin), and returns its message.
template <class Fn>
std::string plugin_error(Fn&& fn) {
  try {
    fn();
  } catch (const dspp::Error& e) {
    CHECK(e.code() == dspp::Errc::kPlugin);
    return e.what();
  }
  FAIL("expected a dspp::Error");
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Whether the dynamic loader still has the library mapped in this process.
bool is_mapped(const std::string& path) {
  void* h = dlopen(canon(path).c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!h) return false;
  dlclose(h);
  return true;
}

// A scratch folder removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("dspp_test_plugins_" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string copy(const std::string& file, const std::string& sub = "") const {
    fs::path dir = path / sub;
    fs::create_directories(dir);
    fs::path to = dir / fs::path(file).filename();
    fs::copy_file(file, to, fs::copy_options::overwrite_existing);
    return to.string();
  }
};

// A config view over a flat map of typed values, as the config registry would give a plugin.
struct MapView {
  using Value = std::variant<bool, int64_t, double, std::string>;
  std::map<std::string, Value> values;
  dspp_config_view view{};

  explicit MapView(std::map<std::string, Value> v) : values(std::move(v)) {
    view.struct_size = sizeof(view);
    view.self = this;
    view.has = [](void* self, const char* path) -> int32_t {
      return static_cast<MapView*>(self)->values.count(path) ? 1 : 0;
    };
    view.get_bool = [](void* self, const char* path, int32_t* out) -> dspp_status {
      return get<bool>(self, path, [&](bool b) { *out = b; });
    };
    view.get_int = [](void* self, const char* path, int64_t* out) -> dspp_status {
      return get<int64_t>(self, path, [&](int64_t i) { *out = i; });
    };
    view.get_double = [](void* self, const char* path, double* out) -> dspp_status {
      auto* m = static_cast<MapView*>(self);
      auto it = m->values.find(path);
      if (it == m->values.end()) return DSPP_ERR_INVALID_ARGUMENT;
      if (auto* d = std::get_if<double>(&it->second))
        *out = *d;
      else if (auto* i = std::get_if<int64_t>(&it->second))
        *out = static_cast<double>(*i);
      else
        return DSPP_ERR_INVALID_ARGUMENT;
      return DSPP_OK;
    };
    view.get_string = [](void* self, const char* path, char* buf, size_t cap,
                         size_t* len) -> dspp_status {
      return get<std::string>(self, path, [&](const std::string& s) {
        *len = s.size();
        if (buf && cap > 0) {
          size_t n = std::min(cap - 1, s.size());
          s.copy(buf, n);
          buf[n] = '\0';
        }
      });
    };
    view.get_json = [](void*, const char*, char*, size_t, size_t*) -> dspp_status {
      return DSPP_ERR_NOT_SUPPORTED;
    };
  }
  MapView(const MapView&) = delete;

  template <class T, class Fn>
  static dspp_status get(void* self, const char* path, Fn&& fn) {
    auto* m = static_cast<MapView*>(self);
    auto it = m->values.find(path);
    if (it == m->values.end()) return DSPP_ERR_INVALID_ARGUMENT;
    const T* v = std::get_if<T>(&it->second);
    if (!v) return DSPP_ERR_INVALID_ARGUMENT;
    fn(*v);
    return DSPP_OK;
  }
};

const std::string kGoodDir = fs::path(DSPP_TP_GOOD).parent_path().string();

}  // namespace

TEST_CASE("a library with two plugins registers both, with their manifest", "[plugins]") {
  PluginRegistry reg;
  reg.load_library(DSPP_TP_GOOD);
  const dspp::PluginInfo* info = reg.find("scheduler", "testconst");
  REQUIRE(info != nullptr);
  CHECK(info->kind == "scheduler");
  CHECK(info->name == "testconst");
  CHECK(info->version == "1.2.3");
  CHECK(info->description == "Constant factor (test).");
  CHECK(info->file == canon(DSPP_TP_GOOD));
  CHECK(info->library_name == "test_good");
  CHECK(info->abi_major == DSPP_ABI_MAJOR);
  CHECK(info->abi_minor == DSPP_ABI_MINOR);
  CHECK_FALSE(info->build_id.empty());
  // The descriptor spells it "TestConst2"; the registry keeps the lower-case config name.
  const dspp::PluginInfo* second = reg.find("scheduler", "testconst2");
  REQUIRE(second != nullptr);
  CHECK(second->name == "testconst2");
  CHECK(second->options.empty());

  std::vector<const dspp::PluginInfo*> all = reg.list();
  REQUIRE(all.size() == 2);
  CHECK(all[0]->name == "testconst");
  CHECK(all[1]->name == "testconst2");
  CHECK(reg.list("scheduler").size() == 2);
  CHECK(reg.list("optimizer").empty());
}

TEST_CASE("lookup is case-insensitive in kind and name", "[plugins]") {
  PluginRegistry reg;
  reg.load_library(DSPP_TP_GOOD);
  CHECK(reg.find("scheduler", "TestConst") == reg.find("scheduler", "testconst"));
  CHECK(reg.find("SCHEDULER", "TESTCONST2") != nullptr);
  CHECK(&reg.require("Scheduler", "TestConst2") == reg.find("scheduler", "testconst2"));
  CHECK(reg.find("scheduler", "testconst3") == nullptr);
  CHECK(reg.find("optimizer", "testconst") == nullptr);
}

TEST_CASE("objects work and keep their library loaded after the registry is gone", "[plugins]") {
  REQUIRE_FALSE(is_mapped(DSPP_TP_GOOD));
  std::shared_ptr<dspp::Scheduler> sched;
  {
    PluginRegistry reg;
    reg.load_library(DSPP_TP_GOOD);
    MapView config({{"factor", 0.5}});
    sched = reg.create<dspp::Scheduler>("scheduler", "TestConst", &config.view);
    REQUIRE(sched);
  }
  // The registry is destroyed; the object still holds the library.
  CHECK(is_mapped(DSPP_TP_GOOD));
  const double base[2] = {0.1, 0.2};
  double lrs[2] = {0, 0};
  REQUIRE(sched->init(base, 2) == DSPP_OK);
  REQUIRE(sched->lr_at(7, lrs) == DSPP_OK);
  CHECK(lrs[0] == Approx(0.05));
  CHECK(lrs[1] == Approx(0.1));
  CHECK(sched->momentum_at(7, lrs) == DSPP_ERR_NOT_SUPPORTED);
  CHECK(dspp::last_plugin_error() == "testconst has no momentum");

  // The last reference gone: destroy ran through the plugin, then the library was released.
  sched.reset();
  CHECK_FALSE(is_mapped(DSPP_TP_GOOD));
}

TEST_CASE("several objects share the library, which stays until the last one goes", "[plugins]") {
  std::shared_ptr<dspp::Scheduler> a, b;
  {
    PluginRegistry reg;
    reg.load_library(DSPP_TP_GOOD);
    a = reg.create<dspp::Scheduler>("scheduler", "testconst", nullptr);
    b = reg.create<dspp::Scheduler>("scheduler", "testconst2", nullptr);
  }
  a.reset();
  CHECK(is_mapped(DSPP_TP_GOOD));
  const double base[1] = {1.0};
  double lr = 0;
  REQUIRE(b->init(base, 1) == DSPP_OK);
  REQUIRE(b->lr_at(0, &lr) == DSPP_OK);
  CHECK(lr == Approx(2.0));
  b.reset();
  CHECK_FALSE(is_mapped(DSPP_TP_GOOD));
}

TEST_CASE("options reach the plugin through the config view", "[plugins]") {
  PluginRegistry reg;
  reg.load_library(DSPP_TP_GOOD);
  MapView config({{"factor", int64_t{3}}, {"mode", std::string("half")}});
  auto sched = reg.create<dspp::Scheduler>("scheduler", "testconst", &config.view);
  const double base[1] = {1.0};
  double lr = 0;
  REQUIRE(sched->init(base, 1) == DSPP_OK);
  REQUIRE(sched->lr_at(1, &lr) == DSPP_OK);
  CHECK(lr == Approx(1.5));
  // No config at all: the plugin sees an empty view and takes its defaults.
  auto plain = reg.create<dspp::Scheduler>("scheduler", "testconst", nullptr);
  REQUIRE(plain->init(base, 1) == DSPP_OK);
  REQUIRE(plain->lr_at(1, &lr) == DSPP_OK);
  CHECK(lr == Approx(1.0));
}

TEST_CASE("a library for another ABI major is refused, naming the file and both majors",
          "[plugins]") {
  PluginRegistry reg;
  std::string msg = plugin_error([&] { reg.load_library(DSPP_TP_WRONG_ABI); });
  INFO(msg);
  CHECK(contains(msg, canon(DSPP_TP_WRONG_ABI)));
  CHECK(contains(msg, "built for dspp plugin ABI major 2"));
  CHECK(contains(msg, "dspp_plugin_entry_v2"));
  CHECK(contains(msg, "this dspp speaks ABI major 1"));
  CHECK(reg.list().empty());
}

TEST_CASE("a library without the entry symbol is refused, naming the file", "[plugins]") {
  PluginRegistry reg;
  std::string msg = plugin_error([&] { reg.load_library(DSPP_TP_NO_ENTRY); });
  INFO(msg);
  CHECK(contains(msg, canon(DSPP_TP_NO_ENTRY) + ": no entry symbol dspp_plugin_entry_v1"));
}

TEST_CASE("a missing or unloadable file is refused, naming it", "[plugins]") {
  PluginRegistry reg;
  TempDir tmp;
  std::string missing = (tmp.path / "libnothere.so").string();
  std::string msg = plugin_error([&] { reg.load_library(missing); });
  INFO(msg);
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "cannot load plugin library"));

  fs::path junk = tmp.path / "libjunk.so";
  {
    std::FILE* f = std::fopen(junk.c_str(), "w");
    REQUIRE(f);
    std::fputs("not an ELF file", f);
    std::fclose(f);
  }
  msg = plugin_error([&] { reg.load_library(junk.string()); });
  INFO(msg);
  CHECK(contains(msg, canon(junk.string()) + ": cannot load plugin library"));
}

TEST_CASE("bad descriptors inside a v1 library are refused with their reason", "[plugins]") {
  PluginRegistry reg;
  std::string msg = plugin_error([&] { reg.load_library(DSPP_TP_DESC_MAJOR); });
  INFO(msg);
  CHECK(contains(msg, canon(DSPP_TP_DESC_MAJOR)));
  CHECK(contains(msg, "plugin scheduler/testbad is built for dspp plugin ABI major 2"));
  CHECK(contains(msg, "this dspp speaks ABI major 1"));

  msg = plugin_error([&] { reg.load_library(DSPP_TP_DESC_MINOR); });
  INFO(msg);
  CHECK(contains(msg, canon(DSPP_TP_DESC_MINOR)));
  CHECK(contains(msg, "needs dspp plugin ABI 1." + std::to_string(DSPP_ABI_MINOR + 1)));
  CHECK(contains(msg, "newer than this dspp's ABI 1." + std::to_string(DSPP_ABI_MINOR)));

  msg = plugin_error([&] { reg.load_library(DSPP_TP_UNKNOWN_KIND); });
  INFO(msg);
  CHECK(contains(msg, canon(DSPP_TP_UNKNOWN_KIND)));
  CHECK(contains(msg, "unknown kind 'optimiser'; kinds: optimizer, zero,"));

  msg = plugin_error([&] { reg.load_library(DSPP_TP_ZERO_OLD); });
  INFO(msg);
  CHECK(contains(msg, "plugin zero/testbad is built for dspp plugin ABI 1.0"));
  CHECK(contains(msg, "zero plugins need ABI 1.1"));

  msg = plugin_error([&] { reg.load_library(DSPP_TP_NO_DESTROY); });
  INFO(msg);
  CHECK(contains(msg, "plugin scheduler/testbad has no create or destroy function"));
  CHECK(reg.list().empty());
}

TEST_CASE("the same (kind, name) from two files is refused, naming both", "[plugins]") {
  TempDir tmp;
  std::string copy = tmp.copy(DSPP_TP_GOOD, "other");
  PluginRegistry reg;
  reg.load_library(DSPP_TP_GOOD);
  std::string msg = plugin_error([&] { reg.load_library(copy); });
  INFO(msg);
  CHECK(contains(msg, "duplicate plugin scheduler/testconst"));
  CHECK(contains(msg, canon(copy)));
  CHECK(contains(msg, canon(DSPP_TP_GOOD)));
  // Nothing of the refused library was registered.
  REQUIRE(reg.list().size() == 2);
  for (const dspp::PluginInfo* info : reg.list()) CHECK(info->file == canon(DSPP_TP_GOOD));
}

TEST_CASE("loading the same file again, by any path, is a no-op", "[plugins]") {
  TempDir tmp;
  fs::create_symlink(canon(DSPP_TP_GOOD), tmp.path / "link.so");
  PluginRegistry reg;
  reg.load_library(DSPP_TP_GOOD);
  reg.load_library(DSPP_TP_GOOD);
  reg.load_library((tmp.path / "link.so").string());
  reg.scan({kGoodDir, kGoodDir});
  CHECK(reg.list("scheduler").size() == 2);
  CHECK(reg.list("optimizer").size() == 1);
}

TEST_CASE("scan loads every .so of a folder and reports all refused ones together", "[plugins]") {
  TempDir tmp;
  std::string good = tmp.copy(DSPP_TP_GOOD);
  std::string wrong = tmp.copy(DSPP_TP_WRONG_ABI);
  std::string none = tmp.copy(DSPP_TP_NO_ENTRY);
  tmp.copy(DSPP_TP_THROWING, "sub");  // sub-folders are not searched
  {
    std::FILE* f = std::fopen((tmp.path / "README.txt").c_str(), "w");  // not a .so: ignored
    REQUIRE(f);
    std::fclose(f);
  }
  PluginRegistry reg;
  std::string msg = plugin_error([&] { reg.scan({tmp.path.string(), "/nonexistent/dspp"}); });
  INFO(msg);
  CHECK(contains(msg, "2 plugin libraries were refused"));
  CHECK(contains(msg, canon(wrong)));
  CHECK(contains(msg, canon(none)));
  // The good library is registered all the same.
  REQUIRE(reg.find("scheduler", "testconst") != nullptr);
  CHECK(reg.find("scheduler", "testconst")->file == canon(good));
  CHECK(reg.find("optimizer", "testbroken") == nullptr);
}

TEST_CASE("scan skips a library whose dependency is missing, and names it when asked for",
          "[plugins]") {
  // As comm/nccl on a machine without libnccl.so.2: the other plugins must still work.
  TempDir tmp;
  tmp.copy(DSPP_TP_GOOD);
  // Copied without its lib/libdspp_tp_dep.so (the test below loads it where the dependency is).
  // Separate test processes: a library once loaded may stay loaded in this process.
  const std::string plugin = tmp.copy(DSPP_TP_NEEDS_DEP);
  PluginRegistry reg;
  std::vector<std::string> warnings;
  dspp::log::set_sink([&](dspp::log::Level l, std::string_view line) {
    if (l == dspp::log::Level::kWarning) warnings.emplace_back(line);
  });
  reg.scan({tmp.path.string()});  // no throw: the good library is all this run needs
  dspp::log::set_sink({});
  CHECK(reg.find("scheduler", "testconst") != nullptr);
  CHECK(reg.find("scheduler", "needsdep") == nullptr);
  REQUIRE(warnings.size() == 1);
  CHECK(contains(warnings[0], "libdspp_tp_dep.so"));
  const std::string msg = plugin_error([&] { reg.require("scheduler", "needsdep"); });
  CHECK(contains(msg, "could not be loaded"));
  CHECK(contains(msg, canon(plugin)));
  CHECK(contains(msg, "libdspp_tp_dep.so"));
  // Loading it by path is an explicit request: that still fails, naming the dependency.
  CHECK(contains(plugin_error([&] { reg.load_library(plugin); }), "libdspp_tp_dep.so"));
}

TEST_CASE("the plugin that needs a library loads and runs where the library is", "[plugins]") {
  PluginRegistry reg;
  reg.scan({fs::path(DSPP_TP_NEEDS_DEP).parent_path().string()});
  auto s = reg.create<dspp::Scheduler>("scheduler", "needsdep", nullptr);
  const double base = 0.5;
  REQUIRE(s->init(&base, 1) == DSPP_OK);
  double lr = 0;
  REQUIRE(s->lr_at(0, &lr) == DSPP_OK);
  CHECK(lr == 1.5);  // base x the dependency's factor 3
}

TEST_CASE("an unknown name lists what is available and where it looked", "[plugins]") {
  PluginRegistry reg;
  reg.scan({kGoodDir});
  std::string msg = plugin_error([&] { reg.require("scheduler", "adamx"); });
  CHECK(msg == "no scheduler plugin named 'adamx'; available: testconst, testconst2 (searched: " +
                   kGoodDir + ")");
  msg = plugin_error([&] { reg.require("zero", "stage9"); });
  CHECK(msg == "no zero plugin named 'stage9'; available: none (searched: " + kGoodDir + ")");
  msg = plugin_error([&] { reg.require("optimiser", "adam"); });
  CHECK(contains(msg,
                 "unknown plugin kind 'optimiser'; kinds: optimizer, zero, "
                 "pipeline_schedule, tp, flagger, scheduler, comm, device"));
  // create() fails the same way before calling anything.
  msg = plugin_error([&] { reg.create<dspp::Scheduler>("scheduler", "AdamX", nullptr); });
  CHECK(contains(msg, "no scheduler plugin named 'AdamX'; available: testconst, testconst2"));

  PluginRegistry empty;
  msg = plugin_error([&] { empty.require("optimizer", "adam"); });
  CHECK(msg == "no optimizer plugin named 'adam'; available: none (searched: no folders)");
}

TEST_CASE("a plugin that fails to create becomes a dspp::Error with its message", "[plugins]") {
  PluginRegistry reg;
  reg.scan({kGoodDir});
  std::string msg =
      plugin_error([&] { reg.create<dspp::Optimizer>("optimizer", "TestBroken", nullptr); });
  INFO(msg);
  CHECK(contains(msg, "cannot create optimizer/testbroken"));
  CHECK(contains(msg, canon(DSPP_TP_THROWING)));
  CHECK(contains(msg, "testbroken cannot start: no flux capacitor"));
  CHECK(contains(msg, "(status 4: runtime error)"));
  CHECK(dspp::last_plugin_error() == "testbroken cannot start: no flux capacitor");

  MapView config({{"factor", -1.0}});
  msg = plugin_error([&] { reg.create<dspp::Scheduler>("scheduler", "testconst", &config.view); });
  INFO(msg);
  CHECK(contains(msg, "cannot create scheduler/testconst"));
  CHECK(contains(msg, "factor must be >= 0, got -1"));
  CHECK(contains(msg, "(status 1: invalid argument)"));

  MapView wrong_type({{"mode", 7.0}});
  msg = plugin_error(
      [&] { reg.create<dspp::Scheduler>("scheduler", "testconst", &wrong_type.view); });
  CHECK(contains(msg, "config key 'mode' must be a string"));
}

TEST_CASE("option schemas become config key specs", "[plugins]") {
  PluginRegistry reg;
  reg.load_library(DSPP_TP_GOOD);
  const std::vector<dspp::KeySpec>& opts = reg.require("scheduler", "testconst").options;
  REQUIRE(opts.size() == 4);

  const dspp::KeySpec& factor = opts[0];
  CHECK(factor.path == "factor");
  CHECK(factor.type == DSPP_VALUE_FLOAT);
  CHECK(factor.default_json == "1.0");
  CHECK(factor.doc == "Multiplier applied to the base learning rates.");
  REQUIRE(factor.min.has_value());
  CHECK(*factor.min == 0.0);
  CHECK_FALSE(factor.max.has_value());
  CHECK(factor.allow_auto);  // every optimizer/scheduler option accepts "auto" (HF Trainer)
  CHECK(factor.choices.empty());
  CHECK(factor.owner == "scheduler/testconst");

  const dspp::KeySpec& mode = opts[1];
  CHECK(mode.type == DSPP_VALUE_STRING);
  CHECK(mode.default_json == "\"keep\"");
  CHECK(mode.choices == std::vector<std::string>{"keep", "half"});

  const dspp::KeySpec& warmup = opts[2];
  CHECK(warmup.type == DSPP_VALUE_INT);
  REQUIRE(warmup.min.has_value());
  REQUIRE(warmup.max.has_value());
  CHECK(*warmup.min == 0.0);
  CHECK(*warmup.max == 100.0);
  CHECK(warmup.allow_auto);

  const dspp::KeySpec& extra = opts[3];
  CHECK(extra.type == DSPP_VALUE_OBJECT);
  CHECK(extra.default_json.empty());  // NULL default: the key has none

  dspp_option_desc raw = {"a.b", DSPP_VALUE_STRING, "\"x\"", nullptr, 0, 5.0, 6.0, "x||y |z|"};
  dspp::KeySpec spec = dspp::option_to_key_spec(raw, "optimizer/foo");
  CHECK(spec.path == "a.b");
  CHECK(spec.doc.empty());
  CHECK_FALSE(spec.min.has_value());  // no flags: the values are not ranges
  CHECK_FALSE(spec.max.has_value());
  CHECK(spec.choices == std::vector<std::string>{"x", "y", "z"});
  CHECK(spec.owner == "optimizer/foo");
}

TEST_CASE("the digest lists every plugin and hashes the list", "[plugins]") {
  PluginRegistry empty;
  // FNV-1a 64 of nothing is its offset basis.
  CHECK(empty.digest() == "fnv1a64 cbf29ce484222325");

  PluginRegistry a, b;
  a.load_library(DSPP_TP_GOOD);
  a.load_library(DSPP_TP_THROWING);
  b.load_library(DSPP_TP_THROWING);  // another load order, same set
  b.load_library(DSPP_TP_GOOD);
  CHECK(a.digest() == b.digest());
  const std::string build = a.require("scheduler", "testconst").build_id;
  std::string d = a.digest();
  INFO(d);
  const std::string abi = std::to_string(DSPP_ABI_MAJOR) + "." + std::to_string(DSPP_ABI_MINOR);
  CHECK(d.rfind("optimizer/testbroken 1.0.0 " + abi + " " + build + "\n" +
                    "scheduler/testconst 1.2.3 " + abi + " " + build + "\n" +
                    "scheduler/testconst2 0.1.0 " + abi + " " + build + "\nfnv1a64 ",
                0) == 0);
  CHECK(d.size() == d.rfind("fnv1a64 ") + 8 + 16);

  PluginRegistry c;
  c.load_library(DSPP_TP_GOOD);
  CHECK(c.digest() != a.digest());
}

TEST_CASE("the search path: built-ins, plugin_paths, DSPP_PLUGIN_PATH, install", "[plugins]") {
  // The built-in folder sits next to libdspp, in the build tree as in an install.
  fs::path builtin = dspp::builtin_plugin_dir();
  CHECK(builtin.filename() == "plugins");
  CHECK(builtin.parent_path().filename() == "dspp");
  CHECK(fs::exists(builtin.parent_path().parent_path() / "libdspp.so"));

  TempDir tmp;
  for (const char* d : {"a", "b", "c"}) fs::create_directories(tmp.path / d);
  const std::string a = (tmp.path / "a").string(), b = (tmp.path / "b").string(),
                    c = (tmp.path / "c").string();
  const char* old = std::getenv("DSPP_PLUGIN_PATH");
  std::string saved = old ? old : "";
  setenv("DSPP_PLUGIN_PATH", (b + "::" + tmp.path.string() + "/missing:" + a + "/../a").c_str(), 1);
  std::vector<std::string> path = PluginRegistry::search_path({c, a, (tmp.path / "nope").string()});
  if (old)
    setenv("DSPP_PLUGIN_PATH", saved.c_str(), 1);
  else
    unsetenv("DSPP_PLUGIN_PATH");

  // Only existing folders, canonical, each once, in search order.
  std::vector<std::string> mine;
  for (const std::string& p : path) {
    if (p.rfind(canon(tmp.path.string()), 0) == 0) mine.push_back(p);
  }
  CHECK(mine == std::vector<std::string>{canon(c), canon(a), canon(b)});
  if (fs::is_directory(builtin)) {
    REQUIRE_FALSE(path.empty());
    CHECK(path.front() == canon(builtin.string()));
  }

  std::vector<dspp::PluginFolder> cands = dspp::plugin_search_candidates({c});
  REQUIRE(cands.size() >= 3);
  CHECK(cands.front().origin == "built-in");
  CHECK(cands[1].origin == "plugin_paths");
  CHECK(cands[1].path == c);
  CHECK(cands[1].exists);
  CHECK(cands.back().origin == "install");
}
