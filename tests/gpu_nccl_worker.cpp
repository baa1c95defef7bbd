// One rank of a comm/nccl test run (started by test_gpu_nccl through tests/multiprocess.h):
//   gpu_nccl_worker <store dir> <timeout ms>
// RANK and WORLD_SIZE come from the environment; the rank uses GPU RANK. It joins the world
// through a file store, then checks every collective x dtype x reduce op against a float64
// reference on the host (device buffers from device/cuda, on a stream of its own, so the
// communicator must order itself after that stream), splits (a group of one, the world in
// reverse order), a send/recv ring when there are peers, argument errors and barrier. Prints
// "worker ok" and exits 0 when every check passed.
#include <dspp/error.h>
#include <dspp/kinds/comm.h>
#include <dspp/kinds/device.h>
#include <dspp/plugins.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm_worker_util.h"
#include "dist/store.h"

namespace {

using namespace comm_elements;  // the shared element access and failure counting

void require(dspp_status st, const std::string& what) {
  if (st != DSPP_OK) {
    throw std::runtime_error(what + " failed (status " + std::to_string(st) +
                             "): " + dspp::last_plugin_error());
  }
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// What `rank` contributes at `index` in case `c`, already rounded to the dtype. Floats are
// uniform in [-1, 1) (sums round); integers small enough that sums of 8 stay exact (u8: < 32).
double value(int dt, int rank, size_t index, int c) {
  const uint64_t h = mix(mix(static_cast<uint64_t>(c) * 1000003u + static_cast<uint64_t>(rank)) ^
                         static_cast<uint64_t>(index));
  double v;
  switch (dt) {
    case DSPP_I32:
      v = static_cast<double>(static_cast<int64_t>(h % 2000001) - 1000000);
      break;
    case DSPP_I64:
      v = static_cast<double>((static_cast<int64_t>(h % 2001) - 1000) * 8589934592LL +
                              static_cast<int64_t>((h >> 32) % 1000));
      break;
    case DSPP_U8:
      v = static_cast<double>(h % 32);
      break;
    default:
      v = static_cast<double>(h >> 11) * 0x1p-53 * 2.0 - 1.0;
  }
  uint64_t tmp = 0;
  put(&tmp, dt, 0, v);
  return get(&tmp, dt, 0);
}

double unit(int dt) {
  return dt == DSPP_F32 ? 0x1p-24 : dt == DSPP_F64 ? 0x1p-53 : dt == DSPP_F16 ? 0x1p-11 : 0x1p-8;
}

// A device buffer with a host mirror.
struct Buf {
  dspp::Device* dev;
  void* stream;
  int dt;
  size_t n;
  void* d = nullptr;
  std::vector<uint64_t> h;
  Buf(dspp::Device* device, void* s, int dtype, size_t count)
      : dev(device), stream(s), dt(dtype), n(count), h((count * esize(dtype) + 7) / 8 + 1) {
    require(dev->alloc(n * esize(dt), stream, &d), "alloc");
    require(dev->memset(d, 0xFF, n * esize(dt), stream), "memset");  // poison
  }
  ~Buf() { dev->free(d, stream); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  void fill(int rank, int c, size_t offset = 0) {
    for (size_t i = 0; i < n; ++i) put(h.data(), dt, i, value(dt, rank, offset + i, c));
    require(dev->copy(d, h.data(), n * esize(dt), stream), "copy h2d");
  }
  void fetch() { require(dev->copy(h.data(), d, n * esize(dt), stream), "copy d2h"); }
  double at(size_t i) const { return get(h.data(), dt, i); }
  dspp_tensor_view view() const {
    dspp_tensor_view v{};
    v.data = d;
    v.dtype = dt;
    v.ndim = 1;
    v.shape[0] = static_cast<int64_t>(n);
    v.device = {DSPP_DEVICE_CUDA, g_rank};
    v.stream = stream;
    return v;
  }
};

// `w` by address: it is read only after the issuing call (an argument) has set it.
void wait(dspp_status st, dspp::CommWork** wp, const std::string& what) {
  require(st, what + " (issue)");
  dspp::CommWork* w = *wp;
  const dspp_status r = w->wait();
  const std::string msg = r == DSPP_OK ? "" : dspp::last_plugin_error();
  w->release();
  require(r == DSPP_OK ? DSPP_OK : r, what + " (wait): " + msg);
}

// out[j] against the reduction over `ranks` of what they contribute at offset + j.
void check_reduce(const std::string& what, const Buf& out, int op, int c,
                  const std::vector<int>& ranks, size_t offset) {
  const int dt = out.dt;
  const double nr = static_cast<double>(ranks.size());
  long bad = 0;
  for (size_t j = 0; j < out.n; ++j) {
    double sum = 0, abs_sum = 0, mx = -INFINITY, mn = INFINITY;
    for (int q : ranks) {
      const double x = value(dt, q, offset + j, c);
      sum += x;
      abs_sum += std::fabs(x);
      mx = std::max(mx, x);
      mn = std::min(mn, x);
    }
    const double ref = op == dspp::kReduceSum   ? sum
                       : op == dspp::kReduceAvg ? sum / nr
                       : op == dspp::kReduceMax ? mx
                                                : mn;
    double tol = 0;
    if (is_float(dt) && (op == dspp::kReduceSum || op == dspp::kReduceAvg)) {
      // Each addition and the final rounding to the dtype cost at most one unit roundoff of the
      // running |sum|; NCCL's avg divides (or pre-multiplies) once more. f16 adds subnormal steps.
      const double u = unit(dt);
      tol = (nr + 1) * u * abs_sum * 1.02 + (dt == DSPP_F16 ? nr * 0x1p-24 : 0);
      if (op == dspp::kReduceAvg) tol = tol / nr + 2 * u * std::fabs(ref);
    }
    const double got = out.at(j);
    ++g_checks;
    if (!(std::fabs(got - ref) <= tol)) {
      if (bad++ < 3) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s: element %zu is %.17g, expected %.17g (tolerance %g)",
                      what.c_str(), j, got, ref, tol);
        fail(buf);
      }
    }
  }
  if (bad > 3) fail(what + ": " + std::to_string(bad) + " elements wrong in all");
}

void battery(dspp::Communicator* comm, dspp::Device* dev, void* stream) {
  const int n = comm->size();
  const int r = comm->rank();
  std::vector<int> ranks(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ranks[i] = i;
  int c = 0;
  for (size_t m : {size_t(1), size_t(1000), size_t(1) << 20 | 3}) {
    for (int dt : kDtypes) {
      for (int op : {dspp::kReduceSum, dspp::kReduceAvg, dspp::kReduceMax, dspp::kReduceMin}) {
        ++c;
        const std::string tag =
            std::string(dname(dt)) + " x " + std::to_string(m) + " op " + std::to_string(op);
        dspp::CommWork* w = nullptr;
        if (op == dspp::kReduceAvg && !is_float(dt)) {
          Buf b(dev, stream, dt, m);
          EXPECT(comm->all_reduce(b.view(), op, &w) == DSPP_ERR_INVALID_ARGUMENT,
                 "avg on " + tag + " is refused");
          EXPECT(contains(dspp::last_plugin_error(), "avg is not defined for the integer dtype"),
                 "avg refusal message: " + dspp::last_plugin_error());
          continue;
        }
        {
          Buf b(dev, stream, dt, m);
          b.fill(r, c);
          wait(comm->all_reduce(b.view(), op, &w), &w, "all_reduce " + tag);
          b.fetch();
          check_reduce("all_reduce " + tag, b, op, c, ranks, 0);
        }
        {
          // reduce: only the root (c mod n) holds the result.
          const int root = c % n;
          Buf b(dev, stream, dt, m);
          b.fill(r, c);
          wait(comm->reduce(b.view(), root, op, &w), &w, "reduce " + tag);
          b.fetch();
          if (r == root) check_reduce("reduce " + tag, b, op, c, ranks, 0);
        }
        {
          Buf in(dev, stream, dt, m * n);
          Buf out(dev, stream, dt, m);
          in.fill(r, c + 100000);
          wait(comm->reduce_scatter(in.view(), out.view(), op, &w), &w, "reduce_scatter " + tag);
          out.fetch();
          check_reduce("reduce_scatter " + tag, out, op, c + 100000, ranks,
                       static_cast<size_t>(r) * m);
        }
      }
      ++c;
      {
        Buf in(dev, stream, dt, m);
        Buf out(dev, stream, dt, m * n);
        in.fill(r, c);
        dspp::CommWork* w = nullptr;
        wait(comm->all_gather(in.view(), out.view(), &w), &w, "all_gather");
        out.fetch();
        long bad = 0;
        for (int q = 0; q < n; ++q) {
          for (size_t i = 0; i < m; ++i) {
            ++g_checks;
            if (out.at(q * m + i) != value(dt, q, i, c) && bad++ < 3) {
              fail("all_gather " + std::string(dname(dt)) + " x " + std::to_string(m) +
                   ": element " + std::to_string(q * m + i) + " wrong");
            }
          }
        }
      }
      {
        const int root = c % n;
        Buf b(dev, stream, dt, m);
        b.fill(r, c);
        dspp::CommWork* w = nullptr;
        wait(comm->broadcast(b.view(), root, &w), &w, "broadcast");
        b.fetch();
        long bad = 0;
        for (size_t i = 0; i < m; ++i) {
          ++g_checks;
          if (b.at(i) != value(dt, root, i, c) && bad++ < 3) {
            fail("broadcast " + std::string(dname(dt)) + ": element " + std::to_string(i));
          }
        }
      }
    }
  }
}

void features(dspp::Communicator* comm, dspp::Device* dev, void* stream) {
  const int n = comm->size();
  const int r = comm->rank();
  // A group of one (rank 0 alone); the others are not members and get NULL.
  {
    const int32_t zero = 0;
    dspp::Communicator* one = nullptr;
    require(comm->split(&zero, 1, "one", &one), "split [0]");
    EXPECT((one != nullptr) == (r == 0), "split [0]: only rank 0 gets a communicator");
    if (one) {
      EXPECT(one->size() == 1 && one->rank() == 0, "group of one: size 1, rank 0");
      Buf b(dev, stream, DSPP_F32, 4099);
      b.fill(r, 7);
      dspp::CommWork* w = nullptr;
      wait(one->all_reduce(b.view(), dspp::kReduceSum, &w), &w, "all_reduce in a group of one");
      b.fetch();
      check_reduce("all_reduce in a group of one", b, dspp::kReduceSum, 7, {r}, 0);
      require(one->barrier(), "barrier of one");
      one->release();
    }
  }
  // The world in reverse order: rank r is n-1-r there.
  {
    std::vector<int32_t> rev(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) rev[i] = n - 1 - i;
    dspp::Communicator* g = nullptr;
    require(comm->split(rev.data(), n, "reverse", &g), "split reverse");
    EXPECT(g && g->rank() == n - 1 - r && g->size() == n, "reverse group: rank n-1-r");
    if (g) {
      Buf in(dev, stream, DSPP_BF16, 5);
      Buf out(dev, stream, DSPP_BF16, 5 * n);
      in.fill(r, 8);
      dspp::CommWork* w = nullptr;
      wait(g->all_gather(in.view(), out.view(), &w), &w, "all_gather in the reverse group");
      out.fetch();
      for (int q = 0; q < n; ++q) {
        for (size_t i = 0; i < 5; ++i) {
          EXPECT(out.at(q * 5 + i) == value(DSPP_BF16, n - 1 - q, i, 8),
                 "reverse group all_gather slot " + std::to_string(q));
        }
      }
      g->release();
    }
  }
  // Works waited in reverse order, on the default (NULL) stream.
  {
    std::vector<std::unique_ptr<Buf>> bufs;
    std::vector<dspp::CommWork*> works;
    for (int k = 0; k < 6; ++k) {
      bufs.push_back(std::make_unique<Buf>(dev, nullptr, DSPP_F64, 1000 + k));
      bufs.back()->fill(r, 20 + k);
      dspp::CommWork* w = nullptr;
      require(comm->all_reduce(bufs.back()->view(), dspp::kReduceMax, &w), "all_reduce");
      works.push_back(w);
    }
    for (size_t k = works.size(); k-- > 0;) {
      require(works[k]->wait(), "wait");
      works[k]->release();
    }
    std::vector<int> ranks(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ranks[i] = i;
    for (int k = 0; k < 6; ++k) {
      bufs[k]->fetch();
      check_reduce("reverse-order wait " + std::to_string(k), *bufs[k], dspp::kReduceMax, 20 + k,
                   ranks, 0);
    }
  }
  // A send/recv ring (everyone sends first), when there are peers.
  if (n > 1) {
    const int right = (r + 1) % n;
    const int left = (r + n - 1) % n;
    Buf s(dev, stream, DSPP_F32, 262147);
    Buf v(dev, stream, DSPP_F32, 262147);
    s.fill(r, 30);
    dspp::CommWork* ws = nullptr;
    dspp::CommWork* wr = nullptr;
    require(comm->send(s.view(), right, 0, &ws), "send");
    require(comm->recv(v.view(), left, 0, &wr), "recv");
    require(wr->wait(), "recv wait");
    require(ws->wait(), "send wait");
    ws->release();
    wr->release();
    v.fetch();
    long bad = 0;
    for (size_t i = 0; i < v.n; ++i) {
      if (v.at(i) != value(DSPP_F32, left, i, 30)) ++bad;
    }
    EXPECT(bad == 0, "ring: " + std::to_string(bad) + " elements wrong");
  }
  // Argument errors are refused at once, and the communicator stays usable.
  {
    Buf f(dev, stream, DSPP_F32, 8);
    dspp::CommWork* w = nullptr;
    dspp_tensor_view cpu = f.view();
    cpu.device = {DSPP_DEVICE_CPU, 0};
    EXPECT(comm->all_reduce(cpu, dspp::kReduceSum, &w) == DSPP_ERR_INVALID_ARGUMENT &&
               contains(dspp::last_plugin_error(), "CPU memory"),
           "a CPU buffer is refused: " + dspp::last_plugin_error());
    EXPECT(comm->all_reduce(f.view(), 9, &w) == DSPP_ERR_INVALID_ARGUMENT &&
               contains(dspp::last_plugin_error(), "reduce op 9"),
           "reduce op 9 is refused");
    EXPECT(comm->broadcast(f.view(), n, &w) == DSPP_ERR_INVALID_ARGUMENT, "root n is refused");
    EXPECT(comm->send(f.view(), r, 0, &w) == DSPP_ERR_INVALID_ARGUMENT &&
               contains(dspp::last_plugin_error(), "itself"),
           "send to itself is refused");
    EXPECT(w == nullptr, "no work after refusals");
    require(comm->barrier(), "barrier");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <store dir> <timeout ms>\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // progress survives a crash
  const char* rank_env = std::getenv("RANK");
  const char* world_env = std::getenv("WORLD_SIZE");
  g_rank = rank_env ? std::atoi(rank_env) : 0;
  const int world = world_env ? std::atoi(world_env) : 1;
  const int timeout_ms = std::atoi(argv[2]);
  try {
    auto store = dspp::dist::make_file_store(argv[1], std::chrono::milliseconds(timeout_ms + 5000));
    dspp::dist::KvStoreAdapter kv(*store);
    dspp::PluginRegistry registry;
    registry.load_library(DSPP_DEVICE_CUDA_PLUGIN);
    registry.load_library(DSPP_COMM_NCCL_PLUGIN);
    auto dev = registry.create<dspp::Device>("device", "cuda", nullptr);
    require(dev->set_current(g_rank), "set_current");
    void* stream = nullptr;
    require(dev->create_stream(&stream), "create_stream");
    auto backend = registry.create<dspp::CommBackend>("comm", "nccl", nullptr);
    dspp::CommInitArgs args{};
    args.store = kv.c();
    args.rank = g_rank;
    args.world_size = world;
    args.local_rank = g_rank;
    args.local_addr = "127.0.0.1";
    args.prefix = "run";
    args.timeout_ms = timeout_ms;
    dspp::Communicator* comm = nullptr;
    require(backend->init_world(&args, &comm), "init_world");
    std::printf("rank %d: joined the world\n", g_rank);
    EXPECT(comm->rank() == g_rank && comm->size() == world, "world rank and size");
    const char* nvls = std::getenv("NCCL_NVLS_ENABLE");
    EXPECT(nvls && std::string(nvls) == "0", "NCCL_NVLS_ENABLE is 0");
    battery(comm, dev.get(), stream);
    std::printf("rank %d: battery done\n", g_rank);
    features(comm, dev.get(), stream);
    std::printf("rank %d: features done\n", g_rank);
    comm->release();
    require(dev->synchronize(nullptr), "synchronize");
    require(dev->destroy_stream(stream), "destroy_stream");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", g_rank, e.what());
    return 3;
  }
  std::printf("rank %d: %ld checks, %ld failed\n", g_rank, g_checks, g_failures);
  if (g_failures > 0) return 1;
  std::printf("rank %d: worker ok\n", g_rank);
  return 0;
}
