// The rendezvous stores: the TCP store (in-process clients on threads, and real processes as
// ranks), the file store under concurrent processes, and DSPP_TIMEOUT parsing.
//
// Catch2 assertions are not thread-safe: threads record what they saw, the test thread checks.
#include <dspp/error.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "dist/store.h"
#include "multiprocess.h"
#include "test_util.h"

namespace {

using dspp::Errc;
using dspp::dist::make_file_store;
using dspp::dist::make_tcp_store;
using dspp::dist::Millis;
using dspp::dist::Store;
using Clock = std::chrono::steady_clock;

const std::string kHost = "127.0.0.1";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// What a call threw: its code and message, or thrown == false.
struct Caught {
  bool thrown = false;
  Errc code = Errc::kRuntime;
  std::string message;
};

template <class Fn>
Caught catch_of(Fn&& fn) {
  Caught c;
  try {
    fn();
  } catch (const dspp::Error& e) {
    c.thrown = true;
    c.code = e.code();
    c.message = e.what();
  }
  return c;
}

// Sets (or unsets, with nullopt) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string make_temp_dir() {
  char tmpl[] = "/tmp/dspp-store-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

}  // namespace

TEST_CASE("tcp store: set get add and check across a server and three clients", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(10));

  // Three ranks connect at once, each publishes a key and reads the others'.
  std::vector<std::string> seen(3);
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  for (int r = 1; r <= 3; ++r) {
    threads.emplace_back([&, r] {
      errors[r - 1] = error_of([&] {
        auto client = make_tcp_store(kHost, port, false, r, std::chrono::seconds(10));
        client->set("k/" + std::to_string(r), "value of " + std::to_string(r));
        client->add("sum", r);
        std::string all;
        for (int other = 1; other <= 3; ++other) {
          all += client->get("k/" + std::to_string(other)) + "|";
        }
        seen[r - 1] = all;
      });
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 1; r <= 3; ++r) {
    INFO("rank " << r);
    CHECK(errors[r - 1] == "");
    CHECK(seen[r - 1] == "value of 1|value of 2|value of 3|");
  }
  CHECK(server->get("sum") == "6");
  CHECK(server->add("sum", 0) == 6);
  CHECK(server->add("sum", -10) == -4);
  CHECK(server->add("fresh", 5) == 5);  // absent counts as 0
  CHECK(server->check("k/2"));
  CHECK_FALSE(server->check("k/4"));
  server->set("k/2", "replaced");
  CHECK(server->get("k/2") == "replaced");

  const Caught c = catch_of([&] { server->add("k/2", 1); });
  CHECK(c.thrown);
  CHECK(c.code == Errc::kRuntime);
  CHECK(contains(c.message, "'k/2'"));
  CHECK(contains(c.message, "not an integer"));
}

TEST_CASE("tcp store: get blocks until another client sets the key", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(10));
  auto client = make_tcp_store(kHost, port, false, 1, std::chrono::seconds(10));
  std::string got, error;
  double waited = 0;
  std::atomic<bool> started{false};
  std::thread t([&] {
    const auto t0 = Clock::now();
    started = true;
    error = error_of([&] { got = client->get("late/key"); });
    waited = seconds_since(t0);
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK_FALSE(server->check("late/key"));
  server->set("late/key", "here");
  t.join();
  CHECK(error == "");
  CHECK(got == "here");
  CHECK(waited >= 0.15);  // it really waited for the set
  CHECK(waited < 3.0);    // and was answered when the set came, not at its 10 s timeout
}

TEST_CASE("tcp store: add is atomic under 4 threads x 1000 increments", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(20));
  constexpr int kThreads = 4, kAdds = 1000;
  std::vector<std::vector<int64_t>> results(kThreads);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      errors[i] = error_of([&] {
        auto client = make_tcp_store(kHost, port, false, i + 1, std::chrono::seconds(20));
        for (int k = 0; k < kAdds; ++k) results[i].push_back(client->add("counter", 1));
      });
    });
  }
  for (auto& t : threads) t.join();
  for (const std::string& e : errors) CHECK(e == "");
  CHECK(server->add("counter", 0) == kThreads * kAdds);
  // Atomic: every add saw a distinct value, together exactly 1..4000.
  std::set<int64_t> all;
  for (const auto& r : results) all.insert(r.begin(), r.end());
  CHECK(all.size() == static_cast<size_t>(kThreads * kAdds));
  CHECK(*all.begin() == 1);
  CHECK(*all.rbegin() == kThreads * kAdds);
}

TEST_CASE("tcp store: one client object is safe to share between two threads", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(20));
  auto shared = make_tcp_store(kHost, port, false, 1, std::chrono::seconds(20));
  std::vector<std::string> errors(2);
  std::vector<int> mismatches(2, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      errors[i] = error_of([&] {
        for (int k = 0; k < 300; ++k) {
          const std::string key = "t" + std::to_string(i) + "/" + std::to_string(k);
          shared->set(key, key + "!");
          shared->add("shared", 1);
          // A response handed to the wrong thread shows up as a wrong value here.
          if (shared->get(key) != key + "!") ++mismatches[i];
        }
      });
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 2; ++i) {
    CHECK(errors[i] == "");
    CHECK(mismatches[i] == 0);
  }
  CHECK(server->get("shared") == "600");
}

TEST_CASE("tcp store: values are binary-safe", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(10));
  auto client = make_tcp_store(kHost, port, false, 1, std::chrono::seconds(10));
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  const std::string with_nuls = std::string("a\0b\0\0c", 6) + bytes;
  client->set("bin", with_nuls);
  CHECK(server->get("bin") == with_nuls);
  CHECK(server->get("bin").size() == 6 + 256);
  // Larger than one read on either side, so the framing has to reassemble it.
  std::string big;
  for (int i = 0; i < 300000; ++i) big.push_back(static_cast<char>((i * 7919) & 0xff));
  server->set("big", big);
  CHECK(client->get("big") == big);
  client->set("empty", "");
  CHECK(server->check("empty"));
  CHECK(server->get("empty") == "");
  const std::string nul_key("key\0with nul", 12);
  client->set(nul_key, "v");
  CHECK(server->get(nul_key) == "v");
  CHECK_FALSE(server->check("key"));
}

TEST_CASE("tcp store: get of a key never set times out naming the key", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, Millis(200));
  auto client = make_tcp_store(kHost, port, false, 3, Millis(200));
  const auto t0 = Clock::now();
  const Caught c = catch_of([&] { client->get("never/set"); });
  const double waited = seconds_since(t0);
  CHECK(c.thrown);
  CHECK(c.code == Errc::kTimeout);
  CHECK(contains(c.message, "rank 3"));
  CHECK(contains(c.message, "'never/set'"));
  CHECK(contains(c.message, "DSPP_TIMEOUT"));
  CHECK(contains(c.message, kHost + ":" + std::to_string(port)));
  CHECK(waited >= 0.18);
  CHECK(waited < 2.0);
  // The connection is still in step after a timeout.
  client->set("after", "ok");
  CHECK(client->get("after") == "ok");
}

TEST_CASE("tcp store: wait returns the keys still missing", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(10));
  auto client = make_tcp_store(kHost, port, false, 1, std::chrono::seconds(10));
  server->set("a", "1");
  auto t0 = Clock::now();
  const std::vector<std::string> missing = client->wait({"a", "b", "c"}, Millis(150));
  double waited = seconds_since(t0);
  CHECK(missing == std::vector<std::string>{"b", "c"});
  CHECK(waited >= 0.13);
  CHECK(waited < 2.0);

  // Keys that arrive during the wait end it early.
  std::thread setter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server->set("b", "2");
    server->set("c", "3");
  });
  t0 = Clock::now();
  const std::vector<std::string> none = client->wait({"a", "b", "c"}, std::chrono::seconds(10));
  waited = seconds_since(t0);
  setter.join();
  CHECK(none.empty());
  CHECK(waited < 3.0);
  CHECK(client->wait({}, Millis(0)).empty());
  CHECK(client->wait({"zz"}, Millis(0)) == std::vector<std::string>{"zz"});
}

TEST_CASE("tcp store: a client with no server says rank 0 did not answer", "[dist][store]") {
  const int port = mp::free_port();  // nothing listens there
  const auto t0 = Clock::now();
  const Caught c = catch_of([&] { make_tcp_store(kHost, port, false, 2, Millis(200)); });
  const double waited = seconds_since(t0);
  CHECK(c.thrown);
  CHECK(c.code == Errc::kTimeout);
  CHECK(contains(c.message, "rank 2: rank 0's store at " + kHost + ":" + std::to_string(port) +
                                " did not answer within"));
  CHECK(contains(c.message, "(DSPP_TIMEOUT)"));
  CHECK(contains(c.message, "rank 0 never started, or MASTER_ADDR/MASTER_PORT are wrong"));
  CHECK(waited >= 0.18);  // it kept retrying for the whole timeout
  CHECK(waited < 2.0);
}

TEST_CASE("tcp store: a client retries until rank 0 starts listening", "[dist][store]") {
  const int port = mp::free_port();
  std::unique_ptr<Store> client;
  std::string error;
  std::thread t([&] {
    error = error_of([&] { client = make_tcp_store(kHost, port, false, 1, Millis(5000)); });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto server = make_tcp_store(kHost, port, true, 0, Millis(5000));
  t.join();
  REQUIRE(error == "");
  client->set("x", "y");
  CHECK(server->get("x") == "y");
}

TEST_CASE("tcp store: a port already in use is named", "[dist][store]") {
  const int port = mp::free_port();
  auto first = make_tcp_store(kHost, port, true, 0, Millis(2000));
  const Caught c = catch_of([&] { make_tcp_store(kHost, port, true, 0, Millis(2000)); });
  CHECK(c.thrown);
  CHECK((c.code == Errc::kIo || c.code == Errc::kRuntime));
  CHECK(contains(c.message, "MASTER_PORT " + std::to_string(port) +
                                " is already in use on this host (another run?); pick another "
                                "with --master_port / MASTER_PORT"));
  // The first server is unharmed.
  first->set("still", "here");
  CHECK(first->get("still") == "here");
}

TEST_CASE("tcp store: a rank that exits without goodbye sets dspp/lost/rank", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(10));

  // A clean close says goodbye: no lost key.
  make_tcp_store(kHost, port, false, 5, std::chrono::seconds(10))->set("alive/5", "1");

  mp::Launch l;
  l.exe = DSPP_STORE_WORKER;
  l.args = {"die"};
  l.world = 4;
  l.start = {3};
  l.env = {{"MASTER_ADDR", kHost}, {"MASTER_PORT", std::to_string(port)}};
  l.deadline_s = 30;
  const std::vector<mp::RankResult> rs = mp::run(l);
  INFO(mp::describe(rs));
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].exit_code == 0);
  CHECK(server->get("alive/3") == "1");
  const std::string why = server->get("dspp/lost/3");  // blocks until the server notices
  CHECK(contains(why, "rank 3"));
  CHECK(contains(why, "without a goodbye"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(server->check("alive/5"));
  CHECK_FALSE(server->check("dspp/lost/5"));
}

TEST_CASE("tcp store: losing rank 0 mid-get is a clear error", "[dist][store]") {
  const int port = mp::free_port();
  auto server = make_tcp_store(kHost, port, true, 0, std::chrono::seconds(10));
  auto client = make_tcp_store(kHost, port, false, 1, std::chrono::seconds(10));
  Caught c;
  double waited = 0;
  std::thread t([&] {
    const auto t0 = Clock::now();
    c = catch_of([&] { client->get("never"); });
    waited = seconds_since(t0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  server.reset();  // rank 0 goes away while rank 1 waits
  t.join();
  const std::string lost = "lost the connection to rank 0's store at " + kHost + ":" +
                           std::to_string(port) + " (rank 0 exited?)";
  CHECK(c.thrown);
  CHECK(c.code == Errc::kRuntime);
  CHECK(c.message == lost);
  CHECK(waited < 3.0);  // noticed at once, not at the 10 s timeout
  // Later calls fail the same way instead of hanging.
  CHECK(error_of([&] { client->set("k", "v"); }) == lost);
}

TEST_CASE("tcp store: 4 processes count and wait for each other", "[dist][store][multiprocess]") {
  for (const char* variant : {"", "late"}) {
    INFO("variant '" << variant << "'");
    mp::Launch l;
    l.exe = DSPP_STORE_WORKER;
    l.args = {"tcp_count"};
    if (*variant) l.args.push_back(variant);  // late: rank 0 starts its server last
    l.world = 4;
    l.env = {{"DSPP_TIMEOUT", "0.5"}};
    l.deadline_s = 60;
    const std::vector<mp::RankResult> rs = mp::run(l);
    INFO(mp::describe(rs));
    REQUIRE(rs.size() == 4);
    for (const mp::RankResult& r : rs) {
      CHECK(r.exit_code == 0);
      CHECK(contains(r.output, "rank " + std::to_string(r.rank) + " counter=4"));
    }
  }
}

TEST_CASE("file store: 4 processes x 500 adds give exactly 2000", "[dist][store][multiprocess]") {
  const std::string dir = make_temp_dir();
  mp::Launch l;
  l.exe = DSPP_STORE_WORKER;
  l.args = {"file_add", dir, "500"};
  l.world = 4;
  l.deadline_s = 60;
  const std::vector<mp::RankResult> rs = mp::run(l);
  INFO(mp::describe(rs));
  for (const mp::RankResult& r : rs) CHECK(r.exit_code == 0);
  auto store = make_file_store(dir, Millis(1000));
  CHECK(store->get("n") == "2000");
  // One of the processes made the last add and saw 2000.
  int saw_last = 0;
  for (const mp::RankResult& r : rs) saw_last += contains(r.output, "last add returned 2000\n");
  CHECK(saw_last == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("file store: get of a key never set times out naming the key", "[dist][store]") {
  const std::string dir = make_temp_dir();
  auto store = make_file_store(dir, Millis(100));
  const Caught c = catch_of([&] { store->get("never/set"); });
  CHECK(c.thrown);
  CHECK(c.code == Errc::kTimeout);
  CHECK(contains(c.message, "'never/set'"));
  store->set("a/b", std::string("x\0y", 3));
  CHECK(store->get("a/b") == std::string("x\0y", 3));
  CHECK(store->wait({"a/b", "c"}, Millis(20)) == std::vector<std::string>{"c"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("timeout_from_env reads DSPP_TIMEOUT then DEEPSPEED_TIMEOUT in minutes",
          "[dist][store]") {
  using dspp::dist::timeout_from_env;
  {
    ScopedEnv a("DSPP_TIMEOUT", std::nullopt), b("DEEPSPEED_TIMEOUT", std::nullopt);
    CHECK(timeout_from_env() == Millis(10 * 60 * 1000));
  }
  {
    ScopedEnv a("DSPP_TIMEOUT", "0.01"), b("DEEPSPEED_TIMEOUT", std::nullopt);
    CHECK(timeout_from_env() == Millis(600));
  }
  {
    ScopedEnv a("DSPP_TIMEOUT", "3"), b("DEEPSPEED_TIMEOUT", "7");
    CHECK(timeout_from_env() == Millis(3 * 60 * 1000));  // DSPP_TIMEOUT wins
  }
  {
    ScopedEnv a("DSPP_TIMEOUT", std::nullopt), b("DEEPSPEED_TIMEOUT", "2");
    CHECK(timeout_from_env() == Millis(2 * 60 * 1000));
  }
  {
    ScopedEnv a("DSPP_TIMEOUT", ""), b("DEEPSPEED_TIMEOUT", "1.5");
    CHECK(timeout_from_env() == Millis(90 * 1000));  // empty counts as unset
  }
  for (const char* bad : {"abc", "0", "-1", "5x", "nan", "inf", " "}) {
    INFO("DSPP_TIMEOUT='" << bad << "'");
    ScopedEnv a("DSPP_TIMEOUT", bad), b("DEEPSPEED_TIMEOUT", std::nullopt);
    const Caught c = catch_of([] { timeout_from_env(); });
    CHECK(c.thrown);
    CHECK(c.code == Errc::kInvalidArgument);
    CHECK(contains(c.message, "DSPP_TIMEOUT='" + std::string(bad) + "'"));
  }
  {
    ScopedEnv a("DSPP_TIMEOUT", std::nullopt), b("DEEPSPEED_TIMEOUT", "soon");
    const Caught c = catch_of([] { timeout_from_env(); });
    CHECK(c.thrown);
    CHECK(contains(c.message, "DEEPSPEED_TIMEOUT='soon'"));
  }
}
