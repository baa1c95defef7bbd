// The host services handed to plugins, and the status -> dspp::Error conversion.
#include <dspp/error.h>
#include <dspp/plugins.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "log/log.h"
#include "plugins/host_api.h"

TEST_CASE("host api: version fields and rank", "[plugins]") {
  const dspp_host_api* host = dspp::host_api();
  REQUIRE(host != nullptr);
  CHECK(host == dspp::host_api());  // one table for the whole process
  CHECK(host->struct_size == sizeof(dspp_host_api));
  CHECK(host->abi_major == DSPP_ABI_MAJOR);
  CHECK(host->abi_minor == DSPP_ABI_MINOR);
  CHECK(host->rank == 0);
  CHECK(host->world_size == 1);
  dspp::set_host_rank(3, 8);
  CHECK(host->rank == 3);
  CHECK(host->world_size == 8);
  dspp::set_host_rank(0, 1);
}

TEST_CASE("host api: set_error copies the message per thread and returns the code", "[plugins]") {
  const dspp_host_api* host = dspp::host_api();
  char buf[32];
  std::strcpy(buf, "bad shape");
  CHECK(host->set_error(host->self, DSPP_ERR_INVALID_ARGUMENT, buf) == DSPP_ERR_INVALID_ARGUMENT);
  std::strcpy(buf, "overwritten");
  CHECK(dspp::last_plugin_error() == "bad shape");

  std::string other;
  std::thread t([&] {
    host->set_error(host->self, DSPP_ERR_RUNTIME, "from another thread");
    other = dspp::last_plugin_error();
  });
  t.join();
  CHECK(other == "from another thread");
  CHECK(dspp::last_plugin_error() == "bad shape");

  CHECK(host->set_error(host->self, DSPP_ERR_RUNTIME, nullptr) == DSPP_ERR_RUNTIME);
  CHECK(dspp::last_plugin_error().empty());
  dspp::clear_plugin_error();
}

TEST_CASE("host api: host memory is 64-byte aligned and writable", "[plugins]") {
  const dspp_host_api* host = dspp::host_api();
  for (size_t bytes :
       {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{100}, size_t{1} << 20}) {
    void* p = host->alloc_host(host->self, bytes);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    std::memset(p, 0xab, bytes);
    host->free_host(host->self, p);
  }
  CHECK(host->alloc_host(host->self, SIZE_MAX - 10) == nullptr);
  host->free_host(host->self, nullptr);
}

TEST_CASE("host api: plugin log lines land in the core logger", "[plugins]") {
  std::vector<std::pair<dspp::log::Level, std::string>> lines;
  dspp::log::set_sink(
      [&](dspp::log::Level l, std::string_view line) { lines.emplace_back(l, std::string(line)); });
  const dspp_host_api* host = dspp::host_api();
  host->log(host->self, DSPP_LOG_WARNING, "myplugin", "hello from a plugin");
  host->log(host->self, DSPP_LOG_ERROR, nullptr, "no name");
  dspp::log::set_sink({});
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].first == dspp::log::Level::kWarning);
  CHECK(lines[0].second.find("myplugin: hello from a plugin") != std::string::npos);
  CHECK(lines[1].first == dspp::log::Level::kError);
  CHECK(lines[1].second.find("plugin: no name") != std::string::npos);
}

TEST_CASE("check_plugin turns a status into dspp::Error with the plugin's message", "[plugins]") {
  dspp::clear_plugin_error();
  CHECK_NOTHROW(dspp::check_plugin(DSPP_OK, "step"));

  const dspp_host_api* host = dspp::host_api();
  dspp_status s = host->set_error(host->self, DSPP_ERR_NOT_SUPPORTED, "no fp16 here");
  try {
    dspp::check_plugin(s, "optimizer/adam step");
    FAIL("check_plugin did not throw");
  } catch (const dspp::Error& e) {
    CHECK(e.code() == dspp::Errc::kPlugin);
    CHECK(std::string(e.what()) == "optimizer/adam step: no fp16 here (status 2: not supported)");
  }

  dspp::clear_plugin_error();
  try {
    dspp::check_plugin(DSPP_ERR_OUT_OF_MEMORY, "zero/stage3 init");
    FAIL("check_plugin did not throw");
  } catch (const dspp::Error& e) {
    CHECK(std::string(e.what()) ==
          "zero/stage3 init: the plugin reported no message (status 3: out of memory)");
  }
}

TEST_CASE("the empty config view has no keys", "[plugins]") {
  const dspp_config_view* v = dspp::empty_config_view();
  REQUIRE(v->struct_size == sizeof(dspp_config_view));
  CHECK(v->has(v->self, "lr") == 0);
  double d = 0;
  CHECK(v->get_double(v->self, "lr", &d) == DSPP_ERR_INVALID_ARGUMENT);
  size_t len = 0;
  CHECK(v->get_string(v->self, "name", nullptr, 0, &len) == DSPP_ERR_INVALID_ARGUMENT);
}
