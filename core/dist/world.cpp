// init_distributed(): from the launch environment to a world group. Rank 0 serves the store; every
// rank announces itself and waits for all others (naming those that never come), then the comm
// plugin connects them. destroy_process_group() keeps rank 0's store alive until every rank is
// done.
#include "dist/world.h"

#include <dspp/device.h>
#include <dspp/error.h>
#include <dspp/plugins.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "log/log.h"
#include "plugins/host_api.h"

namespace dspp {
namespace dist {
namespace {

using Clock = std::chrono::steady_clock;

struct World {
  LaunchEnv env;
  Millis timeout{0};
  std::unique_ptr<Store> store;  // null for a single process
  std::unique_ptr<KvStoreAdapter> kv;
  std::shared_ptr<PluginRegistry> registry;  // keeps the comm plugin's library loaded
  std::shared_ptr<CommBackend> backend;
  std::string backend_name;
  std::shared_ptr<ProcessGroup> world;
  int64_t plugin_checks = 0;  // how many check_plugins_match() calls this process made
  int64_t groups_made = 0;
};

std::mutex g_mu;
std::shared_ptr<World> g_world;  // guarded by g_mu

std::string minutes_text(Millis t) {
  std::ostringstream s;
  s << static_cast<double>(t.count()) / 60000.0 << " min";
  return s.str();
}

std::string ranks_text(const std::vector<int>& ranks) {
  std::string s;
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// The address of this host that routes to the master: what peers on other hosts can reach.
// connect() on a UDP socket sends nothing; it only asks the kernel for the route.
std::string local_address_towards(const std::string& master) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(master.c_str(), "9", &hints, &res) != 0 || !res) {
    throw Error(Errc::kInvalidArgument, "MASTER_ADDR '" + master + "' does not resolve");
  }
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  std::string out = "127.0.0.1";
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    char buf[INET_ADDRSTRLEN];
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        ::inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf)) {
      out = buf;
    }
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(res);
  return out;
}

std::string hostname() {
  char buf[256] = {0};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

std::shared_ptr<Communicator> adopt(Communicator* c, std::shared_ptr<CommBackend> keep) {
  return std::shared_ptr<Communicator>(c, [keep](Communicator* p) { p->release(); });
}

// Every rank says it is here and waits for the others. The value carries what must agree.
void wait_for_all_ranks(World& w) {
  const int n = w.env.world_size;
  const std::string mine =
      std::to_string(n) + " " + hostname() + " pid " + std::to_string(::getpid());
  w.store->set("dspp/arrived/" + std::to_string(w.env.rank), mine);
  std::vector<std::string> keys;
  for (int r = 0; r < n; ++r) keys.push_back("dspp/arrived/" + std::to_string(r));
  // Rank 0 decides: when its wait ends with ranks missing it publishes the verdict and stays a
  // moment so the ranks that did arrive read it, instead of losing its store mid-wait. The others
  // wait in slices, watching for that verdict, with a grace period past the timeout.
  const std::string verdict = "dspp/init_failed", seen = "dspp/init_failed_seen";
  std::vector<std::string> missing;
  if (w.env.rank == 0) {
    missing = w.store->wait(keys, w.timeout);
  } else {
    const auto deadline = Clock::now() + w.timeout + std::chrono::seconds(5);
    while (true) {
      missing = w.store->wait(keys, Millis(200));
      if (missing.empty()) break;
      if (w.store->check(verdict)) {
        const std::string text = w.store->get(verdict);
        w.store->add(seen, 1);
        throw Error(Errc::kTimeout, "rank " + std::to_string(w.env.rank) + ": " + text);
      }
      if (Clock::now() > deadline) break;
    }
  }
  if (!missing.empty()) {
    std::vector<int> ranks;
    for (const std::string& k : missing) ranks.push_back(std::stoi(k.substr(k.rfind('/') + 1)));
    const std::string text =
        std::string("rank") + (ranks.size() > 1 ? "s " : " ") + ranks_text(ranks) + " of " +
        std::to_string(n) + " did not arrive within " + minutes_text(w.timeout) +
        " (DSPP_TIMEOUT): not started, crashed at start, or started with another "
        "MASTER_ADDR/MASTER_PORT (" +
        w.env.master_addr + ":" + std::to_string(w.env.master_port) + ")";
    if (w.env.rank == 0) {
      w.store->set(verdict, text);
      const int64_t present = n - 1 - static_cast<int64_t>(ranks.size());
      const auto until = Clock::now() + std::chrono::seconds(2);
      while (w.store->add(seen, 0) < present && Clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    throw Error(Errc::kTimeout, "rank " + std::to_string(w.env.rank) + ": " + text);
  }
  for (int r = 0; r < n; ++r) {
    std::string v = w.store->get(keys[r]);
    if (std::stoi(v) != n) {
      throw Error(Errc::kInvalidArgument, "rank " + std::to_string(r) + " (" + v +
                                              ") was started with another world size than " +
                                              std::to_string(n));
    }
  }
}

std::shared_ptr<World> start_world(const DistOptions& o) {
  auto w = std::make_shared<World>();
  w->env = read_launch_env(o.distributed_port);
  log::set_rank(w->env.rank, w->env.world_size);
  set_host_rank(w->env.rank, w->env.world_size);
  if (w->env.world_size == 1) {
    w->world =
        std::make_shared<ProcessGroup>("world", std::vector<int>{0}, 0, make_self_communicator());
    return w;
  }
  // Writing to a socket whose peer died raises SIGPIPE, whose default action kills this process
  // silently (the comm library's writes are not all MSG_NOSIGNAL). A dead peer must be an error
  // with a message instead: ignore SIGPIPE unless the host installed its own handler.
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
    std::signal(SIGPIPE, SIG_IGN);
  }
  w->timeout = timeout_from_env();
  const std::string file_prefix = "file://";
  if (o.init_method.rfind(file_prefix, 0) == 0) {
    w->store = make_file_store(o.init_method.substr(file_prefix.size()), w->timeout);
  } else if (o.init_method == "env://" || o.init_method.empty()) {
    w->store = make_tcp_store(w->env.master_addr, w->env.master_port, w->env.rank == 0, w->env.rank,
                              w->timeout);
  } else {
    throw Error(Errc::kInvalidArgument, "init_distributed: init_method '" + o.init_method +
                                            "' is not env:// or file:///<shared folder>");
  }
  w->kv = std::make_unique<KvStoreAdapter>(*w->store);
  wait_for_all_ranks(*w);

  w->registry = std::make_shared<PluginRegistry>();
  w->registry->scan(PluginRegistry::search_path(o.plugin_paths));
  w->backend = w->registry->create<CommBackend>(DSPP_KIND_COMM, o.backend, empty_config_view());
  w->backend_name = o.backend;
  const std::string local = local_address_towards(w->env.master_addr);
  CommInitArgs args{w->kv->c(),
                    w->env.rank,
                    w->env.world_size,
                    w->env.local_rank,
                    local.c_str(),
                    "dspp/comm/world",
                    static_cast<int64_t>(w->timeout.count())};
  Communicator* c = nullptr;
  check_plugin(w->backend->init_world(&args, &c), "comm/" + o.backend + " init_world");
  std::vector<int> all(w->env.world_size);
  for (int r = 0; r < w->env.world_size; ++r) all[r] = r;
  w->world = std::make_shared<ProcessGroup>("world", all, w->env.rank, adopt(c, w->backend));
  log::info("dist", "rank " + std::to_string(w->env.rank) + " of " +
                        std::to_string(w->env.world_size) + " (" + w->env.source + ") joined via " +
                        w->env.master_addr + ":" + std::to_string(w->env.master_port) + ", comm/" +
                        o.backend + " on " + local);
  return w;
}

}  // namespace

bool comm_needs_device_memory() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_world && g_world->backend_name == "nccl";
}

namespace {

std::shared_ptr<World> world_or_throw() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_world) {
    throw Error(Errc::kInvalidArgument,
                "distributed is not initialized: call dspp::init_distributed() (or initialize(), "
                "which does it) first");
  }
  return g_world;
}

void destroy_at_exit() {
  try {
    destroy_process_group();
  } catch (const std::exception& e) {
    log::warn("dist", std::string("at exit: ") + e.what());
  }
}

}  // namespace

LaunchEnv current_env() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_world ? g_world->env : LaunchEnv{};
}

std::string describe_lost_ranks() {
  std::shared_ptr<World> w;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    w = g_world;
  }
  if (!w || !w->store) return "";
  // The store hears of a dead peer at about the moment the collective does: give it a moment.
  const auto deadline = Clock::now() + std::chrono::milliseconds(500);
  std::vector<int> lost;
  try {
    while (true) {
      for (int r = 0; r < w->env.world_size; ++r) {
        if (w->store->check("dspp/lost/" + std::to_string(r))) lost.push_back(r);
      }
      if (!lost.empty() || Clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::exception&) {
    return "rank 0's store at " + w->env.master_addr + ":" + std::to_string(w->env.master_port) +
           " is unreachable: rank 0 exited or was killed";
  }
  if (lost.empty()) return "";
  return std::string(lost.size() > 1 ? "ranks " : "rank ") + ranks_text(lost) +
         (lost.size() > 1 ? " exited or were killed (their connections to the store dropped)"
                          : " exited or was killed (its connection to the store dropped)");
}

void check_plugins_match(const PluginRegistry& registry) {
  std::shared_ptr<World> w = world_or_throw();
  if (!w->store) return;
  const int n = w->env.world_size;
  const std::string base = "dspp/plugins/" + std::to_string(w->plugin_checks++) + "/";
  w->store->set(base + std::to_string(w->env.rank), registry.digest());
  std::vector<std::string> lists(n);
  for (int r = 0; r < n; ++r) lists[r] = w->store->get(base + std::to_string(r));
  auto lines = [](const std::string& text) {
    std::set<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) {
      if (l.rfind("fnv1a64 ", 0) != 0) out.insert(l);
    }
    return out;
  };
  const std::set<std::string> ref = lines(lists[0]);
  std::string report;
  for (int r = 1; r < n; ++r) {
    if (lists[r] == lists[0]) continue;
    const std::set<std::string> mine = lines(lists[r]);
    std::string only0, onlyr;
    for (const std::string& l : ref) {
      if (!mine.count(l)) only0 += "\n    " + l;
    }
    for (const std::string& l : mine) {
      if (!ref.count(l)) onlyr += "\n    " + l;
    }
    report += "\n  rank " + std::to_string(r) + " differs from rank 0:";
    if (!only0.empty()) report += "\n   only on rank 0:" + only0;
    if (!onlyr.empty()) report += "\n   only on rank " + std::to_string(r) + ":" + onlyr;
  }
  if (!report.empty()) {
    throw Error(Errc::kPlugin,
                "the ranks loaded different plugins (kind/name version ABI build id); every rank "
                "must load the same set (check DSPP_PLUGIN_PATH and plugin_paths on each host):" +
                    report);
  }
}

MeshGroups make_mesh_groups(const Mesh& mesh) {
  MeshGroups g;
  const int sp = static_cast<int>(mesh.sp_size);
  const int dp = static_cast<int>(mesh.dp_size);
  const int rank = static_cast<int>(mesh.rank);
  std::shared_ptr<ProcessGroup> world = world_group();
  if (world->size() != dp * sp) {
    throw Error(Errc::kInvalidArgument, "mesh dp " + std::to_string(dp) + " x sp " +
                                            std::to_string(sp) + " does not cover the world of " +
                                            std::to_string(world->size()));
  }
  g.dp_rank = rank / sp;
  g.grad = world;
  if (sp == 1 || dp == 1) {
    // One of the two is the world, the other a group of one (which needs no collective split).
    (sp == 1 ? g.dp : g.sp) = world;
    (sp == 1 ? g.sp : g.dp) = new_group({rank}, sp == 1 ? "sp" : "dp");
    return g;
  }
  // Every rank takes part in every split (the tags keep them apart), members get their group.
  for (int d = 0; d < dp; ++d) {
    std::vector<int> ranks;
    for (int s = 0; s < sp; ++s) ranks.push_back(d * sp + s);
    auto pg = new_group(ranks, "sp" + std::to_string(d));
    if (pg) g.sp = pg;
  }
  for (int s = 0; s < sp; ++s) {
    std::vector<int> ranks;
    for (int d = 0; d < dp; ++d) ranks.push_back(d * sp + s);
    auto pg = new_group(ranks, "dp" + std::to_string(s));
    if (pg) g.dp = pg;
  }
  return g;
}

}  // namespace dist

void init_distributed(const DistOptions& options) {
  {
    std::lock_guard<std::mutex> lock(dist::g_mu);
    if (dist::g_world) return;
  }
  DistOptions o = options;
  if (o.backend.empty()) {
    const char* b = std::getenv("DSPP_COMM_BACKEND");
    o.backend = b && *b ? b : current_device().type == DSPP_DEVICE_CUDA ? "nccl" : "gloo";
  }
  std::shared_ptr<dist::World> w = dist::start_world(o);
  std::lock_guard<std::mutex> lock(dist::g_mu);
  if (!dist::g_world) {
    dist::g_world = std::move(w);
    static bool registered = false;
    if (!registered) {
      registered = true;
      std::atexit(&dist::destroy_at_exit);
    }
  }
}

bool is_initialized() {
  std::lock_guard<std::mutex> lock(dist::g_mu);
  return dist::g_world != nullptr;
}

std::shared_ptr<ProcessGroup> world_group() {
  return dist::world_or_throw()->world;
}

std::shared_ptr<ProcessGroup> new_group(const std::vector<int>& global_ranks,
                                        const std::string& name) {
  std::shared_ptr<dist::World> w = dist::world_or_throw();
  const int me = w->env.rank;
  std::vector<int32_t> ranks(global_ranks.begin(), global_ranks.end());
  for (int32_t r : ranks) {
    if (r < 0 || r >= w->env.world_size) {
      throw Error(Errc::kInvalidArgument, "new_group '" + name + "': rank " + std::to_string(r) +
                                              " is outside the world of " +
                                              std::to_string(w->env.world_size));
    }
  }
  auto it = std::find(global_ranks.begin(), global_ranks.end(), me);
  if (ranks.size() == 1) {
    // A group of one needs no peer: no collective split, so only its member calls for it.
    if (it == global_ranks.end()) return nullptr;
    return std::make_shared<ProcessGroup>(name, global_ranks, 0, dist::make_self_communicator());
  }
  const std::string tag = name + "." + std::to_string(w->groups_made++);
  Communicator* c = nullptr;
  check_plugin(
      w->world->comm()->split(ranks.data(), static_cast<int32_t>(ranks.size()), tag.c_str(), &c),
      "new_group '" + name + "'");
  if (it == global_ranks.end()) {
    if (c) c->release();
    return nullptr;
  }
  if (!c) {
    throw Error(Errc::kRuntime, "new_group '" + name +
                                    "': the comm plugin made no communicator "
                                    "for member rank " +
                                    std::to_string(me));
  }
  return std::make_shared<ProcessGroup>(
      name, global_ranks, static_cast<int>(it - global_ranks.begin()), dist::adopt(c, w->backend));
}

void destroy_process_group() {
  std::shared_ptr<dist::World> w;
  {
    std::lock_guard<std::mutex> lock(dist::g_mu);
    w = std::move(dist::g_world);
  }
  if (!w || !w->store) return;
  const int n = w->env.world_size;
  try {
    w->store->set("dspp/exit/" + std::to_string(w->env.rank), "1");
    if (w->env.rank == 0) {
      // Rank 0 serves the store: stay until every rank has left (cleanly or not) or the timeout.
      const auto deadline = dist::Clock::now() + w->timeout;
      for (int r = 1; r < n && dist::Clock::now() < deadline;) {
        if (w->store->check("dspp/exit/" + std::to_string(r)) ||
            w->store->check("dspp/lost/" + std::to_string(r))) {
          ++r;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
    }
  } catch (const std::exception& e) {
    log::warn("dist", std::string("destroy_process_group: ") + e.what());
  }
  // Groups first (they use the plugin), then the plugin, then the store.
  w->world.reset();
  w->backend.reset();
  w->kv.reset();
  w->store.reset();
}

}  // namespace dspp
