// One rank of a comm/gloo test run (started by test_comm_gloo through tests/multiprocess.h):
//   comm_gloo_worker <store dir> <mode> <timeout ms> [tcp]
// RANK and WORLD_SIZE come from the environment. The rank builds a file store in <store dir> (or,
// with "tcp", joins the TCP store rank 0 serves at MASTER_ADDR:MASTER_PORT),
// loads the comm/gloo plugin through the registry, joins the world and runs <mode>:
//   battery   every collective x dtype x size, checked against a float64 reference
//   features  async works waited in reverse order, split groups concurrent with the world,
//             a send/recv ring, barrier ordering
//   errors    argument errors refused with a message, communicator still usable after
//   die       rank 1 exits mid-run: the others fail (not hang) and stay failed
//   stall     rank 1 stops issuing: the others time out
//   alone     only rank 0 starts: init_world times out naming the missing rank
// Every value is a function of (rank, index, case), so each rank computes what every other rank
// contributed. Prints "worker ok" and exits 0 when every check passed.
#include <dspp/error.h>
#include <dspp/kinds/comm.h>
#include <dspp/plugins.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comm_worker_util.h"
#include "dist/store.h"

namespace {

using namespace comm_elements;  // the shared element access and failure counting

using Clock = std::chrono::steady_clock;
using dspp::Communicator;

int g_world = 1;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- values --------------------------------------------------------------------------------

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// kExact: quarter-integers in [-8, 8) for floats (every partial sum of <= 4 is representable even
// in bf16), small integers otherwise. kRounding: uniform in [-1, 1), sums round.
enum Kind { kExact, kRounding };

// The value `rank` contributes at `index` in case `c`, already rounded to the dtype.
double value(int dt, int rank, size_t index, int c, Kind k) {
  const uint64_t h = mix(mix(static_cast<uint64_t>(c) * 1000003u + static_cast<uint64_t>(rank)) ^
                         static_cast<uint64_t>(index));
  double v = 0;
  switch (dt) {
    case DSPP_I32:
      return static_cast<double>(static_cast<int64_t>(h % 2000001) - 1000000);
    case DSPP_I64:
      // Beyond 32 bits, and still exact in a double after summing four.
      return static_cast<double>((static_cast<int64_t>(h % 2001) - 1000) * 8589934592LL +
                                 static_cast<int64_t>((h >> 32) % 1000));
    case DSPP_U8:
      return static_cast<double>(h % 64);
    default:
      v = k == kExact ? (static_cast<double>(h % 64) - 32.0) / 4.0
                      : static_cast<double>(h >> 11) * 0x1p-53 * 2.0 - 1.0;
  }
  uint64_t tmp = 0;
  put(&tmp, dt, 0, v);
  return get(&tmp, dt, 0);
}

// Unit roundoff of a float dtype.
double unit(int dt) {
  switch (dt) {
    case DSPP_F32:
      return 0x1p-24;
    case DSPP_F64:
      return 0x1p-53;
    case DSPP_F16:
      return 0x1p-11;
    case DSPP_BF16:
      return 0x1p-8;
    default:
      return 0;
  }
}

// ---- buffers and jobs ----------------------------------------------------------------------

struct Buf {
  int dt;
  size_t n;
  std::vector<uint64_t> mem;  // 8-byte aligned
  Buf(int dtype, size_t count) : dt(dtype), n(count), mem((count * esize(dtype) + 7) / 8 + 1) {}
  void* data() { return mem.data(); }
  double at(size_t i) const { return get(mem.data(), dt, i); }
  dspp_tensor_view view() {
    dspp_tensor_view v{};
    v.data = data();
    v.dtype = dt;
    v.ndim = 1;
    v.shape[0] = static_cast<int64_t>(n);
    v.device = {DSPP_DEVICE_CPU, 0};
    return v;
  }
  // Element i holds what `rank` contributes at index offset + i.
  void fill(int rank, int c, Kind k, size_t offset = 0) {
    for (size_t i = 0; i < n; ++i) put(data(), dt, i, value(dt, rank, offset + i, c, k));
  }
};

std::vector<int> all_ranks(int n) {
  std::vector<int> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

// Checks out[j] against the reduction over `ranks` of what they contribute at offset + j.
void check_reduce(const std::string& what, const Buf& out, int op, int c, Kind k,
                  const std::vector<int>& ranks, size_t offset) {
  const int dt = out.dt;
  const double n = static_cast<double>(ranks.size());
  const double u = unit(dt);
  long bad = 0;
  for (size_t j = 0; j < out.n; ++j) {
    double sum = 0, abs_sum = 0, mx = -INFINITY, mn = INFINITY;
    for (int q : ranks) {
      const double x = value(dt, q, offset + j, c, k);
      sum += x;
      abs_sum += std::fabs(x);
      mx = std::max(mx, x);
      mn = std::min(mn, x);
    }
    double ref = op == dspp::kReduceSum   ? sum
                 : op == dspp::kReduceAvg ? sum / n
                 : op == dspp::kReduceMax ? mx
                                          : mn;
    // Exact data: sums are exact, avg rounds once. Rounding data: each of the n - 1 additions
    // rounds (|error| <= (n - 1) u sum|x| to first order), f16 adds half a subnormal step each.
    double tol = 0;
    if (is_float(dt) && (op == dspp::kReduceSum || op == dspp::kReduceAvg)) {
      double sum_tol = 0;
      if (k == kRounding) {
        sum_tol = (n - 1) * u * abs_sum * 1.02 + (dt == DSPP_F16 ? (n - 1) * 0x1p-25 : 0);
      }
      tol = op == dspp::kReduceSum
                ? sum_tol
                : sum_tol / n + u * std::fabs(ref) + (dt == DSPP_F16 ? 0x1p-25 : 0);
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

struct Job {
  std::string what;
  dspp::CommWork* work = nullptr;
  std::vector<Buf> bufs;
  std::function<void(Job&)> check;
};

void issued(dspp_status st, Job& j, std::vector<Job>& jobs) {
  if (st != DSPP_OK) {
    fail(j.what + ": refused: " + dspp::last_plugin_error());
    return;
  }
  jobs.push_back(std::move(j));
}

void issue_all_reduce(Communicator* comm, std::vector<Job>& jobs, int dt, size_t m, int op, int c,
                      Kind k, std::vector<int> ranks, int my_value_rank) {
  Job j;
  j.what = std::string("all_reduce ") + opname(op) + " " + dname(dt) + " x " + std::to_string(m) +
           " case " + std::to_string(c);
  j.bufs.emplace_back(dt, m);
  j.bufs[0].fill(my_value_rank, c, k);
  j.check = [=](Job& job) { check_reduce(job.what, job.bufs[0], op, c, k, ranks, 0); };
  issued(comm->all_reduce(j.bufs[0].view(), op, &j.work), j, jobs);
}

// reduce: only the root (c mod n) holds the result; the others' buffers are unspecified.
void issue_reduce(Communicator* comm, std::vector<Job>& jobs, int dt, size_t m, int op, int c,
                  Kind k, std::vector<int> ranks, int my_value_rank) {
  const int root = c % comm->size();
  Job j;
  j.what = std::string("reduce ") + opname(op) + " " + dname(dt) + " x " + std::to_string(m) +
           " root " + std::to_string(root) + " case " + std::to_string(c);
  j.bufs.emplace_back(dt, m);
  j.bufs[0].fill(my_value_rank, c, k);
  const bool mine = comm->rank() == root;
  j.check = [=](Job& job) {
    if (mine) check_reduce(job.what, job.bufs[0], op, c, k, ranks, 0);
  };
  issued(comm->reduce(j.bufs[0].view(), root, op, &j.work), j, jobs);
}

void issue_reduce_scatter(Communicator* comm, std::vector<Job>& jobs, int dt, size_t m, int op,
                          int c, Kind k, std::vector<int> ranks, int my_value_rank) {
  const int n = comm->size();
  const int r = comm->rank();
  Job j;
  j.what = std::string("reduce_scatter ") + opname(op) + " " + dname(dt) + " x " +
           std::to_string(m) + " per rank case " + std::to_string(c);
  j.bufs.emplace_back(dt, m * static_cast<size_t>(n));
  j.bufs.emplace_back(dt, m);
  j.bufs[0].fill(my_value_rank, c, k);
  j.check = [=](Job& job) {
    check_reduce(job.what, job.bufs[1], op, c, k, ranks, static_cast<size_t>(r) * m);
  };
  issued(comm->reduce_scatter(j.bufs[0].view(), j.bufs[1].view(), op, &j.work), j, jobs);
}

void issue_all_gather(Communicator* comm, std::vector<Job>& jobs, int dt, size_t m, int c,
                      std::vector<int> ranks, int my_value_rank) {
  Job j;
  j.what = std::string("all_gather ") + dname(dt) + " x " + std::to_string(m) + " case " +
           std::to_string(c);
  j.bufs.emplace_back(dt, m);
  j.bufs.emplace_back(dt, m * ranks.size());
  j.bufs[0].fill(my_value_rank, c, kExact);
  j.check = [=](Job& job) {
    long bad = 0;
    for (size_t q = 0; q < ranks.size(); ++q) {
      for (size_t i = 0; i < m; ++i) {
        ++g_checks;
        const double want = value(dt, ranks[q], i, c, kExact);
        const double got = job.bufs[1].at(q * m + i);
        if (got != want && bad++ < 3) {
          fail(job.what + ": out[" + std::to_string(q * m + i) + "] is " + std::to_string(got) +
               ", expected " + std::to_string(want));
        }
      }
    }
  };
  issued(comm->all_gather(j.bufs[0].view(), j.bufs[1].view(), &j.work), j, jobs);
}

void issue_broadcast(Communicator* comm, std::vector<Job>& jobs, int dt, size_t m, int c,
                     std::vector<int> ranks, int my_value_rank) {
  const int root = c % comm->size();
  Job j;
  j.what = std::string("broadcast ") + dname(dt) + " x " + std::to_string(m) + " root " +
           std::to_string(root) + " case " + std::to_string(c);
  j.bufs.emplace_back(dt, m);
  j.bufs[0].fill(my_value_rank, c, kExact);
  j.check = [=](Job& job) {
    long bad = 0;
    for (size_t i = 0; i < m; ++i) {
      ++g_checks;
      const double want = value(dt, ranks[root], i, c, kExact);
      if (job.bufs[0].at(i) != want && bad++ < 3) {
        fail(job.what + ": element " + std::to_string(i) + " is " +
             std::to_string(job.bufs[0].at(i)) + ", expected " + std::to_string(want));
      }
    }
  };
  issued(comm->broadcast(j.bufs[0].view(), root, &j.work), j, jobs);
}

// Waits for the jobs in the given order (reverse when asked), then checks every result.
void finish(std::vector<Job>& jobs, bool reverse = false) {
  std::vector<size_t> order(jobs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = reverse ? jobs.size() - 1 - i : i;
  std::vector<bool> ok(jobs.size(), false);
  for (size_t i : order) {
    const dspp_status st = jobs[i].work->wait();
    if (st != DSPP_OK) {
      fail(jobs[i].what + ": failed (status " + std::to_string(st) +
           "): " + dspp::last_plugin_error());
    }
    ok[i] = st == DSPP_OK;
    jobs[i].work->release();
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (ok[i]) jobs[i].check(jobs[i]);
  }
  jobs.clear();
}

void require(dspp_status st, const std::string& what) {
  if (st != DSPP_OK) {
    throw std::runtime_error(what + " failed (status " + std::to_string(st) +
                             "): " + dspp::last_plugin_error());
  }
}

// ---- modes ---------------------------------------------------------------------------------

void battery(Communicator* comm) {
  const size_t sizes[] = {1, 3, 7, 1000, 4099, 262147, 1500007};
  const std::vector<int> world = all_ranks(comm->size());
  const int r = g_rank;
  int c = 0;
  std::vector<Job> jobs;
  for (size_t m : sizes) {
    const bool huge = m > 1000000;
    for (int dt : kDtypes) {
      // The largest size runs a subset, to keep the test short on small machines.
      if (huge && dt != DSPP_F32 && dt != DSPP_BF16 && dt != DSPP_I64) continue;
      for (int op = 0; op < 4; ++op) {
        if (op == dspp::kReduceAvg && !is_float(dt)) continue;
        if (huge && dt != DSPP_F32 && op != (dt == DSPP_BF16 ? dspp::kReduceSum : dspp::kReduceMax))
          continue;
        issue_all_reduce(comm, jobs, dt, m, op, ++c, kExact, world, r);
        if (!huge) issue_reduce(comm, jobs, dt, m, op, ++c, kExact, world, r);
      }
      if (!huge || dt == DSPP_F32) {
        issue_reduce_scatter(comm, jobs, dt, m, dspp::kReduceSum, ++c, kExact, world, r);
        issue_reduce_scatter(comm, jobs, dt, m, is_float(dt) ? dspp::kReduceAvg : dspp::kReduceMax,
                             ++c, kExact, world, r);
        issue_all_gather(comm, jobs, dt, m, ++c, world, r);
        issue_broadcast(comm, jobs, dt, m, ++c, world, r);
      }
      finish(jobs);
    }
    // Sums that round: f16 and bf16 within their stated tolerance.
    if (m >= 1000 && !huge) {
      for (int dt : {DSPP_F16, DSPP_BF16, DSPP_F32}) {
        issue_all_reduce(comm, jobs, dt, m, dspp::kReduceSum, ++c, kRounding, world, r);
        issue_all_reduce(comm, jobs, dt, m, dspp::kReduceAvg, ++c, kRounding, world, r);
        issue_reduce_scatter(comm, jobs, dt, m, dspp::kReduceSum, ++c, kRounding, world, r);
      }
      finish(jobs);
    }
  }
  // In-place forms: reduce_scatter's out is this rank's slice of in, all_gather's in its slice of
  // out.
  {
    const int n = comm->size();
    const size_t m = 4099;
    Buf in(DSPP_F32, m * n);
    in.fill(r, ++c, kExact);
    const int rs_case = c;
    dspp_tensor_view out_view = in.view();
    out_view.data = static_cast<float*>(in.data()) + static_cast<size_t>(r) * m;
    out_view.shape[0] = static_cast<int64_t>(m);
    dspp::CommWork* w = nullptr;
    require(comm->reduce_scatter(in.view(), out_view, dspp::kReduceSum, &w), "in-place rs");
    require(w->wait(), "in-place reduce_scatter");
    w->release();
    Buf got(DSPP_F32, m);
    std::memcpy(got.data(), out_view.data, m * 4);
    check_reduce("in-place reduce_scatter", got, dspp::kReduceSum, rs_case, kExact, world,
                 static_cast<size_t>(r) * m);

    Buf all(DSPP_I32, m * n);
    const int ag_case = ++c;
    for (size_t i = 0; i < m; ++i) {
      put(all.data(), DSPP_I32, static_cast<size_t>(r) * m + i,
          value(DSPP_I32, r, i, ag_case, kExact));
    }
    dspp_tensor_view in_view = all.view();
    in_view.data = static_cast<int32_t*>(all.data()) + static_cast<size_t>(r) * m;
    in_view.shape[0] = static_cast<int64_t>(m);
    require(comm->all_gather(in_view, all.view(), &w), "in-place all_gather");
    require(w->wait(), "in-place all_gather");
    w->release();
    for (int q = 0; q < n; ++q) {
      for (size_t i = 0; i < m; ++i) {
        EXPECT(all.at(static_cast<size_t>(q) * m + i) == value(DSPP_I32, q, i, ag_case, kExact),
               "in-place all_gather: element " + std::to_string(q * m + i));
      }
    }
  }
}

void features(Communicator* comm, dspp::dist::Store& store) {
  const int n = comm->size();
  const int r = g_rank;
  const std::vector<int> world = all_ranks(n);
  std::vector<Job> jobs;

  // 1. Several outstanding works, waited in reverse order.
  issue_all_reduce(comm, jobs, DSPP_F32, 4099, dspp::kReduceSum, 1001, kExact, world, r);
  issue_all_gather(comm, jobs, DSPP_I64, 1000, 1002, world, r);
  issue_broadcast(comm, jobs, DSPP_BF16, 7, 1003, world, r);
  issue_reduce_scatter(comm, jobs, DSPP_F64, 1000, dspp::kReduceAvg, 1004, kExact, world, r);
  issue_all_reduce(comm, jobs, DSPP_I32, 262147, dspp::kReduceMax, 1005, kExact, world, r);
  issue_all_reduce(comm, jobs, DSPP_F16, 3, dspp::kReduceMin, 1006, kExact, world, r);
  finish(jobs, /*reverse=*/true);

  // 2. Split into even and odd ranks; each group runs collectives concurrently with the world.
  std::vector<int32_t> evens, odds;
  for (int q = 0; q < n; ++q) (q % 2 ? odds : evens).push_back(q);
  Communicator* ge = nullptr;
  Communicator* go = nullptr;
  auto t0 = Clock::now();
  require(comm->split(evens.data(), static_cast<int32_t>(evens.size()), "parity", &ge),
          "split evens");
  const double t_evens = seconds_since(t0);
  if (!odds.empty()) {
    require(comm->split(odds.data(), static_cast<int32_t>(odds.size()), "parity", &go),
            "split odds");
  }
  EXPECT((ge != nullptr) == (r % 2 == 0), "split: membership of the even group");
  EXPECT((go != nullptr) == (r % 2 == 1), "split: membership of the odd group");
  if (r % 2 == 1) EXPECT(t_evens < 0.5, "split: a non-member waited " + std::to_string(t_evens));
  Communicator* sub = ge ? ge : go;
  const std::vector<int32_t>& mine32 = ge ? evens : odds;
  const std::vector<int> mine(mine32.begin(), mine32.end());
  if (sub) {
    EXPECT(sub->size() == static_cast<int>(mine.size()), "split: group size");
    EXPECT(sub->rank() == r / 2, "split: rank in the group");
    for (int round = 0; round < 3; ++round) {
      issue_all_reduce(sub, jobs, DSPP_F32, 100003, dspp::kReduceSum, 1100 + round, kExact, mine,
                       r);
      issue_all_reduce(comm, jobs, DSPP_I64, 65537, dspp::kReduceSum, 1200 + round, kExact, world,
                       r);
      issue_reduce_scatter(sub, jobs, DSPP_BF16, 5003, dspp::kReduceSum, 1300 + round, kExact, mine,
                           r);
      issue_all_gather(sub, jobs, DSPP_U8, 777, 1400 + round, mine, r);
      issue_broadcast(comm, jobs, DSPP_F64, 999, 1500 + round, world, r);
    }
    finish(jobs);
    require(sub->barrier(), "group barrier");
  }
  // The same split again gets fresh keys and a working group.
  Communicator* again = nullptr;
  require(comm->split(evens.data(), static_cast<int32_t>(evens.size()), "parity", &again),
          "split evens again");
  EXPECT((again != nullptr) == (r % 2 == 0), "split again: membership");
  if (again) {
    issue_all_reduce(again, jobs, DSPP_I32, 1000, dspp::kReduceSum, 1600, kExact, mine, r);
    finish(jobs);
    again->release();
  }
  // A group of one: every collective is local.
  Communicator* self = nullptr;
  const int32_t me = r;
  require(comm->split(&me, 1, "self", &self), "split self");
  EXPECT(self && self->size() == 1 && self->rank() == 0, "split self: a group of one");
  if (self) {
    issue_all_reduce(self, jobs, DSPP_F32, 7, dspp::kReduceAvg, 1700, kExact, {r}, r);
    issue_reduce_scatter(self, jobs, DSPP_I64, 9, dspp::kReduceSum, 1701, kExact, {r}, r);
    issue_all_gather(self, jobs, DSPP_F16, 5, 1702, {r}, r);
    issue_broadcast(self, jobs, DSPP_U8, 3, 1703, {r}, r);
    finish(jobs);
    require(self->barrier(), "barrier of one");
    self->release();
  }
  if (ge) ge->release();
  if (go) go->release();

  // 3. A send/recv ring: every rank sends first, then receives (no deadlock), big and small
  // messages, two tags, two messages on one tag arriving in order.
  {
    const int right = (r + 1) % n;
    const int left = (r + n - 1) % n;
    const size_t big = 262147;
    Buf send_big(DSPP_F32, big), recv_big(DSPP_F32, big);
    send_big.fill(r, 2001, kExact);
    Buf send_small(DSPP_I64, 17), recv_small(DSPP_I64, 17);
    send_small.fill(r, 2002, kExact);
    Buf send_a(DSPP_I32, 100), send_b(DSPP_I32, 100), recv_a(DSPP_I32, 100), recv_b(DSPP_I32, 100);
    send_a.fill(r, 2003, kExact);
    send_b.fill(r, 2004, kExact);
    std::vector<dspp::CommWork*> works(8, nullptr);
    require(comm->send(send_big.view(), right, 5, &works[0]), "send big");
    require(comm->send(send_small.view(), left, 9, &works[1]), "send small");
    require(comm->send(send_a.view(), right, 11, &works[2]), "send a");
    require(comm->send(send_b.view(), right, 11, &works[3]), "send b");
    require(comm->recv(recv_big.view(), left, 5, &works[4]), "recv big");
    require(comm->recv(recv_small.view(), right, 9, &works[5]), "recv small");
    require(comm->recv(recv_a.view(), left, 11, &works[6]), "recv a");
    require(comm->recv(recv_b.view(), left, 11, &works[7]), "recv b");
    for (size_t i = works.size(); i-- > 0;) {
      require(works[i]->wait(), "p2p work " + std::to_string(i));
      works[i]->release();
    }
    for (size_t i = 0; i < big; ++i) {
      if (recv_big.at(i) != value(DSPP_F32, left, i, 2001, kExact)) {
        fail("recv big: element " + std::to_string(i) + " wrong");
        break;
      }
    }
    ++g_checks;
    for (size_t i = 0; i < 17; ++i) {
      EXPECT(recv_small.at(i) == value(DSPP_I64, right, i, 2002, kExact), "recv small");
    }
    for (size_t i = 0; i < 100; ++i) {
      EXPECT(recv_a.at(i) == value(DSPP_I32, left, i, 2003, kExact), "recv a (first on tag 11)");
      EXPECT(recv_b.at(i) == value(DSPP_I32, left, i, 2004, kExact), "recv b (second on tag 11)");
    }
  }

  // 4. Barrier: nobody leaves before every rank has arrived (each one marks its arrival in the
  // store first, the later ranks after a delay).
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(40 * ((r + round) % n)));
    store.set("barrier/" + std::to_string(round) + "/" + std::to_string(r), "1");
    require(comm->barrier(), "barrier");
    for (int q = 0; q < n; ++q) {
      EXPECT(store.check("barrier/" + std::to_string(round) + "/" + std::to_string(q)),
             "barrier round " + std::to_string(round) + ": rank " + std::to_string(q) +
                 " had not arrived");
    }
  }
  // Nobody leaves (rank 0 serves the TCP store) before every rank is done with the store.
  require(comm->barrier(), "final barrier");
}

// Each argument error is refused at issue time with a message; the communicator stays usable.
void errors(Communicator* comm) {
  const int n = comm->size();
  Buf f32(DSPP_F32, 8), f64(DSPP_F64, 8 * n), i32(DSPP_I32, 8), u8(DSPP_U8, 8), odd(DSPP_F32, 7);
  dspp::CommWork* w = nullptr;
  auto refused = [&](dspp_status st, const std::string& what, std::vector<std::string> parts) {
    const std::string msg = dspp::last_plugin_error();
    EXPECT(st == DSPP_ERR_INVALID_ARGUMENT,
           what + ": status " + std::to_string(st) + " (want invalid argument)");
    EXPECT(w == nullptr, what + ": a work handle came back");
    for (const std::string& p : parts) {
      EXPECT(contains(msg, p), what + ": message '" + msg + "' lacks '" + p + "'");
    }
    std::printf("rank %d refused %s: %s\n", g_rank, what.c_str(), msg.c_str());
  };
  refused(comm->all_reduce(i32.view(), dspp::kReduceAvg, &w), "avg i32", {"avg", "i32"});
  refused(comm->all_reduce(u8.view(), dspp::kReduceAvg, &w), "avg u8", {"avg", "u8"});
  refused(comm->reduce_scatter(i32.view(), i32.view(), dspp::kReduceAvg, &w), "rs avg i32",
          {"avg", "i32"});
  refused(comm->all_reduce(f32.view(), 7, &w), "reduce op 7", {"reduce op 7"});
  refused(comm->reduce_scatter(odd.view(), f32.view(), dspp::kReduceSum, &w), "rs sizes",
          {"7", "reduce_scatter"});
  refused(comm->reduce_scatter(f64.view(), f32.view(), dspp::kReduceSum, &w), "rs dtypes",
          {"f64", "f32"});
  refused(comm->all_gather(f32.view(), odd.view(), &w), "ag sizes", {"all_gather", "7"});
  refused(comm->all_gather(f32.view(), f64.view(), &w), "ag dtypes", {"f32", "f64"});
  dspp_tensor_view cuda = f32.view();
  cuda.device = {DSPP_DEVICE_CUDA, 0};
  refused(comm->all_reduce(cuda, dspp::kReduceSum, &w), "cuda buffer", {"CPU"});
  dspp_tensor_view bad_dtype = f32.view();
  bad_dtype.dtype = 42;
  refused(comm->broadcast(bad_dtype, 0, &w), "dtype 42", {"dtype 42"});
  refused(comm->broadcast(f32.view(), n, &w), "root out of range", {"root"});
  refused(comm->send(f32.view(), comm->rank(), 0, &w), "send to self", {"itself"});
  refused(comm->recv(f32.view(), -1, 0, &w), "recv from -1", {"-1"});
  const dspp_status st = comm->all_reduce(f32.view(), dspp::kReduceSum, nullptr);
  EXPECT(st == DSPP_ERR_INVALID_ARGUMENT && contains(dspp::last_plugin_error(), "work"),
         "a NULL work pointer is refused");
  const int32_t outsider = n + 3;
  Communicator* sub = nullptr;
  refused(comm->split(&outsider, 1, "x", &sub), "split with a non-member", {"not a member"});

  // Still usable: every rank was refused the same calls, so the sequences agree.
  std::vector<Job> jobs;
  issue_all_reduce(comm, jobs, DSPP_I32, 1000, dspp::kReduceSum, 3001, kExact, all_ranks(n),
                   g_rank);
  finish(jobs);
}

// Rank 1 exits without a word after the warm-up; the others must fail within the timeout, with a
// message, and stay failed.
void die(Communicator* comm, int timeout_ms, bool stall) {
  std::vector<Job> jobs;
  issue_all_reduce(comm, jobs, DSPP_F32, 1000, dspp::kReduceSum, 4001, kExact,
                   all_ranks(comm->size()), g_rank);
  finish(jobs);
  require(comm->barrier(), "barrier before the loss");
  if (g_rank == 1) {
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(stall ? timeout_ms + 700 : 300));
    std::printf("rank 1: leaving\n");
    std::fflush(stdout);
    ::_exit(0);  // no release, no goodbye: as if it crashed
  }
  Buf buf(DSPP_F32, 4099);
  buf.fill(g_rank, 4002, kExact);
  dspp::CommWork* w = nullptr;
  const auto t0 = Clock::now();
  require(comm->all_reduce(buf.view(), dspp::kReduceSum, &w), "all_reduce issue");
  const dspp_status st = w->wait();
  const std::string msg = dspp::last_plugin_error();
  w->release();
  const double took = seconds_since(t0);
  std::printf("rank %d: failed after %.3f s with status %d: %s\n", g_rank, took, st, msg.c_str());
  EXPECT(st == DSPP_ERR_COMM || st == DSPP_ERR_TIMEOUT,
         "the lost peer gives comm or timeout, got " + std::to_string(st));
  if (stall) EXPECT(st == DSPP_ERR_TIMEOUT, "a stalled peer gives a timeout");
  EXPECT(took < timeout_ms / 1000.0 + 1.5, "failed only after " + std::to_string(took) + " s");
  EXPECT(contains(msg, "all_reduce") && contains(msg, "f32 x 4099"),
         "the message names the operation: " + msg);

  // Later operations fail fast with the first error.
  const auto t1 = Clock::now();
  dspp_status st2 = comm->all_reduce(buf.view(), dspp::kReduceSum, &w);
  if (st2 == DSPP_OK) {
    st2 = w->wait();
    w->release();
  }
  const std::string msg2 = dspp::last_plugin_error();
  EXPECT(st2 == st, "a later operation fails with the first status");
  EXPECT(contains(msg2, "failed earlier") && contains(msg2, msg.substr(0, 40)),
         "a later operation repeats the first error: " + msg2);
  EXPECT(seconds_since(t1) < 0.2, "a later operation failed fast");
  const dspp_status st3 = comm->barrier();
  EXPECT(st3 == st, "barrier after the failure fails too");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s <store dir> <mode> <timeout ms> [tcp]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string mode = argv[2];
  const int timeout_ms = std::atoi(argv[3]);
  const char* rank_env = std::getenv("RANK");
  const char* world_env = std::getenv("WORLD_SIZE");
  g_rank = rank_env ? std::atoi(rank_env) : 0;
  g_world = world_env ? std::atoi(world_env) : 1;
  const auto t0 = Clock::now();
  try {
    const std::chrono::milliseconds store_timeout(timeout_ms + 5000);
    std::unique_ptr<dspp::dist::Store> store;
    if (argc > 4 && std::string(argv[4]) == "tcp") {
      const char* host = std::getenv("MASTER_ADDR");
      const char* port = std::getenv("MASTER_PORT");
      if (!host || !port) throw std::runtime_error("tcp store: MASTER_ADDR/MASTER_PORT unset");
      store = dspp::dist::make_tcp_store(host, std::atoi(port), g_rank == 0, g_rank, store_timeout);
    } else {
      store = dspp::dist::make_file_store(dir, store_timeout);
    }
    dspp::dist::KvStoreAdapter kv(*store);
    dspp::PluginRegistry registry;
    registry.load_library(DSPP_COMM_GLOO_PLUGIN);
    auto backend = registry.create<dspp::CommBackend>("comm", "gloo", nullptr);

    dspp::CommInitArgs args{};
    args.store = kv.c();
    args.rank = g_rank;
    args.world_size = g_world;
    args.local_rank = g_rank;
    args.local_addr = "127.0.0.1";
    args.prefix = "run";
    args.timeout_ms = timeout_ms;
    Communicator* comm = nullptr;
    const dspp_status st = backend->init_world(&args, &comm);
    if (mode == "alone") {
      const std::string msg = dspp::last_plugin_error();
      const double took = seconds_since(t0);
      std::printf("rank %d: init_world gave status %d after %.3f s: %s\n", g_rank, st, took,
                  msg.c_str());
      EXPECT(st == DSPP_ERR_TIMEOUT, "init_world without peers times out");
      EXPECT(comm == nullptr, "no communicator after a failed init_world");
      EXPECT(contains(msg, "rank(s) 1 never arrived"), "the message names rank 1: " + msg);
      EXPECT(took < timeout_ms / 1000.0 + 1.5, "init_world gave up late");
    } else {
      require(st, "init_world");
      EXPECT(comm->rank() == g_rank && comm->size() == g_world, "world rank and size");
      if (mode == "battery") {
        battery(comm);
      } else if (mode == "features") {
        features(comm, *store);
      } else if (mode == "errors") {
        errors(comm);
      } else if (mode == "die" || mode == "stall") {
        die(comm, timeout_ms, mode == "stall");
      } else {
        throw std::runtime_error("unknown mode " + mode);
      }
      comm->release();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", g_rank, e.what());
    return 3;
  }
  std::printf("rank %d: %ld checks, %ld failed, %.2f s\n", g_rank, g_checks, g_failures,
              seconds_since(t0));
  if (g_failures > 0) return 1;
  std::printf("rank %d: worker ok\n", g_rank);
  return 0;
}
