// The TCP store: rank 0 serves a key-value map from a background thread, every rank (rank 0 too)
// talks to it through one client connection.
//
// Wire format (all integers big-endian): every message is a frame `u32 length, body`. A request
// body is `u8 op` followed by the op's fields; a response body is `u8 status` followed by the
// result. Strings are `u32 length, bytes`, so keys and values are binary-safe.
//
//   HELLO  u32 magic, u32 version, i32 rank  -> ok
//   SET    str key, str value                -> ok
//   GET    u64 timeout_ms, str key           -> ok str value | timeout
//   ADD    str key, i64 delta                -> ok i64 value | error str message
//   CHECK  str key                           -> ok u8 exists
//   WAIT   u64 timeout_ms, u32 n, str keys   -> ok u32 n, str missing keys
//   BYE                                      -> (no response; the client closes)
//
// GET and WAIT are parked on the server until their keys exist or their deadline passes, so a
// client blocks in recv() instead of polling. The deadline travels with the request, which keeps
// the connection in step: the server always answers, with "timeout" at the latest.
#include <dspp/error.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "dist/store.h"

namespace dspp::dist {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x44535053;  // "DSPS"
constexpr uint32_t kVersion = 1;
// Larger frames are garbage (something else connected to the port), not a store request.
constexpr uint32_t kMaxFrame = 256u << 20;

enum Op : uint8_t { kHello = 1, kSet, kGet, kAdd, kCheck, kWait, kBye };
enum Status : uint8_t { kOk = 0, kTimedOut = 1, kFailed = 2 };

std::string minutes_text(Millis t) {
  std::ostringstream s;
  s << static_cast<double>(t.count()) / 60000.0 << " min";
  return s.str();
}

std::string errno_text() {
  return std::strerror(errno);
}

// --- encoding --------------------------------------------------------------------------------

void put_u8(std::string& out, uint8_t v) {
  out.push_back(static_cast<char>(v));
}

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_str(std::string& out, const std::string& s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out += s;
}

// Prepends the frame length to a finished body.
std::string frame(const std::string& body) {
  std::string out;
  put_u32(out, static_cast<uint32_t>(body.size()));
  return out + body;
}

// Reads fields off a received body; a short body is a protocol error.
class Reader {
 public:
  explicit Reader(const std::string& body) : body_(body) {}

  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(body_[pos_++]);
  }
  uint32_t u32() {
    need(4);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(body_[pos_++]);
    return v;
  }
  uint64_t u64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(body_[pos_++]);
    return v;
  }
  std::string str() {
    const uint32_t n = u32();
    need(n);
    std::string s = body_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  void need(size_t n) {
    if (body_.size() - pos_ < n) throw Error(Errc::kRuntime, "store: truncated message");
  }
  const std::string& body_;
  size_t pos_ = 0;
};

// Milliseconds from now until `t`, rounded up (so poll() never wakes early and spins), >= 0.
int64_t millis_until(Clock::time_point t) {
  const auto d = t - Clock::now();
  if (d <= Clock::duration::zero()) return 0;
  return std::chrono::duration_cast<Millis>(d).count() + 1;
}

int poll_timeout(int64_t ms) {
  return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

// --- the server --------------------------------------------------------------------------------

class Server {
 public:
  explicit Server(int port) : port_(port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) throw Error(Errc::kIo, "store server: socket() failed: " + errno_text());
    // SO_REUSEADDR lets a restarted run bind while the last run's connections sit in TIME_WAIT;
    // a port with a live listener still fails with EADDRINUSE.
    int one = 1;
    if (::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
      fail_setup("setsockopt(SO_REUSEADDR)");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      if (errno == EADDRINUSE) {
        ::close(listen_fd_);
        throw Error(Errc::kIo, "MASTER_PORT " + std::to_string(port) +
                                   " is already in use on this host (another run?); pick another "
                                   "with --master_port / MASTER_PORT");
      }
      fail_setup("bind() to port " + std::to_string(port));
    }
    if (::listen(listen_fd_, 1024) != 0) fail_setup("listen() on port " + std::to_string(port));
    // The destructor writes to this pipe to wake the thread out of poll().
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) fail_setup("pipe2()");
    thread_ = std::thread([this] { serve(); });
  }

  ~Server() {
    const char c = 0;
    if (::write(wake_[1], &c, 1) != 1) {
      std::fprintf(stderr, "dspp store server: cannot wake the server thread: %s\n",
                   errno_text().c_str());
    }
    thread_.join();
    for (auto& [id, conn] : conns_) ::close(conn.fd);
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  struct Conn {
    int fd = -1;
    int rank = -1;     // from HELLO; -1 until then
    bool bye = false;  // said goodbye: its close is not a lost rank
    bool dead = false;
    std::string in;   // bytes received, not yet a whole frame
    std::string out;  // responses not yet written (the socket is non-blocking)
  };

  // A GET or WAIT waiting for its keys.
  struct Parked {
    uint64_t conn = 0;
    Op op = kGet;
    std::vector<std::string> keys;
    Clock::time_point deadline;
  };

  [[noreturn]] void fail_setup(const std::string& what) {
    const std::string err = errno_text();
    ::close(listen_fd_);
    if (wake_[0] >= 0) ::close(wake_[0]);
    if (wake_[1] >= 0) ::close(wake_[1]);
    throw Error(Errc::kIo,
                "store server (port " + std::to_string(port_) + "): " + what + " failed: " + err);
  }

  void serve() {
    try {
      loop();
    } catch (const std::exception& e) {
      // Clients see their connections close and report that rank 0's store went away.
      std::fprintf(stderr, "dspp store server (port %d) stopped: %s\n", port_, e.what());
      for (auto& [id, conn] : conns_) ::shutdown(conn.fd, SHUT_RDWR);
    }
  }

  void loop() {
    std::vector<pollfd> fds;
    std::vector<uint64_t> ids;  // conn id of fds[i + 2]
    while (true) {
      fds.clear();
      ids.clear();
      fds.push_back({wake_[0], POLLIN, 0});
      fds.push_back({listen_fd_, POLLIN, 0});
      for (auto& [id, conn] : conns_) {
        const short events = POLLIN | (conn.out.empty() ? 0 : POLLOUT);
        fds.push_back({conn.fd, events, 0});
        ids.push_back(id);
      }
      int64_t timeout_ms = -1;
      for (const Parked& p : parked_) {
        const int64_t ms = millis_until(p.deadline);
        if (timeout_ms < 0 || ms < timeout_ms) timeout_ms = ms;
      }
      const int n = ::poll(fds.data(), fds.size(), timeout_ms < 0 ? -1 : poll_timeout(timeout_ms));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(Errc::kRuntime, "poll() failed: " + errno_text());
      }
      if (fds[0].revents != 0) return;  // the destructor asked us to stop
      if (fds[1].revents & POLLIN) accept_all();
      for (size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto it = conns_.find(ids[i - 2]);
        if (it == conns_.end()) continue;
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_from(it->first, it->second);
      }
      expire_parked();
      for (auto& [id, conn] : conns_) flush(conn);
      drop_dead();
    }
  }

  void accept_all() {
    while (true) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) {
          return;
        }
        // EMFILE and the like: report, keep serving the connections we have.
        std::fprintf(stderr, "dspp store server (port %d): accept() failed: %s\n", port_,
                     errno_text().c_str());
        return;
      }
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      // Keepalive notices a peer whose host vanished (no FIN ever comes) within about a minute.
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      int idle = 30, interval = 5, count = 6;
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
      Conn conn;
      conn.fd = fd;
      conns_.emplace(next_id_++, std::move(conn));
    }
  }

  void read_from(uint64_t id, Conn& conn) {
    char buf[64 * 1024];
    bool eof = false;
    while (true) {
      const ssize_t got = ::recv(conn.fd, buf, sizeof buf, 0);
      if (got > 0) {
        conn.in.append(buf, static_cast<size_t>(got));
        continue;
      }
      if (got == 0) {
        eof = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        eof = true;  // ECONNRESET and the like: the peer is gone
      }
      break;
    }
    // Whole frames first: a client's BYE arrives together with its close.
    while (!conn.dead && conn.in.size() >= 4) {
      Reader head(conn.in);
      const uint32_t len = head.u32();
      if (len > kMaxFrame || len == 0) {
        conn.dead = true;  // not our protocol
        break;
      }
      if (conn.in.size() < 4 + static_cast<size_t>(len)) break;
      const std::string body = conn.in.substr(4, len);
      conn.in.erase(0, 4 + static_cast<size_t>(len));
      try {
        handle(id, conn, body);
      } catch (const Error&) {
        conn.dead = true;  // a malformed request: drop the connection
      }
    }
    if (eof) conn.dead = true;
  }

  void handle(uint64_t id, Conn& conn, const std::string& body) {
    Reader r(body);
    const uint8_t op = r.u8();
    std::string reply;
    switch (op) {
      case kHello: {
        const uint32_t magic = r.u32();
        const uint32_t version = r.u32();
        const int32_t rank = static_cast<int32_t>(r.u32());
        if (magic != kMagic || version != kVersion) {
          conn.dead = true;
          return;
        }
        conn.rank = rank;
        put_u8(reply, kOk);
        break;
      }
      case kSet: {
        std::string key = r.str();
        std::string value = r.str();
        put_u8(reply, kOk);
        conn.out += frame(reply);
        set_key(std::move(key), std::move(value));
        return;
      }
      case kGet: {
        const uint64_t timeout_ms = r.u64();
        Parked p{id, kGet, {r.str()}, deadline_in(timeout_ms)};
        if (!answer_if_ready(p)) parked_.push_back(std::move(p));
        return;
      }
      case kAdd: {
        std::string key = r.str();
        const int64_t delta = static_cast<int64_t>(r.u64());
        int64_t value = 0;
        auto it = data_.find(key);
        if (it != data_.end() && !parse_int(it->second, value)) {
          put_u8(reply, kFailed);
          put_str(reply, "key '" + key + "' holds a value that is not an integer; add() needs one");
          break;
        }
        value += delta;
        put_u8(reply, kOk);
        put_u64(reply, static_cast<uint64_t>(value));
        conn.out += frame(reply);
        set_key(std::move(key), std::to_string(value));
        return;
      }
      case kCheck: {
        const std::string key = r.str();
        put_u8(reply, kOk);
        put_u8(reply, data_.count(key) ? 1 : 0);
        break;
      }
      case kWait: {
        const uint64_t timeout_ms = r.u64();
        const uint32_t n = r.u32();
        Parked p{id, kWait, {}, deadline_in(timeout_ms)};
        for (uint32_t i = 0; i < n; ++i) p.keys.push_back(r.str());
        if (!answer_if_ready(p)) parked_.push_back(std::move(p));
        return;
      }
      case kBye:
        conn.bye = true;
        return;
      default:
        conn.dead = true;
        return;
    }
    conn.out += frame(reply);
  }

  static Clock::time_point deadline_in(uint64_t timeout_ms) {
    // Clamp so the sum cannot overflow the clock (a timeout of years is "forever" anyway).
    const uint64_t ms = std::min<uint64_t>(timeout_ms, uint64_t{1} << 40);
    return Clock::now() + Millis(static_cast<int64_t>(ms));
  }

  static bool parse_int(const std::string& text, int64_t& out) {
    if (text.empty()) return false;
    size_t used = 0;
    try {
      out = std::stoll(text, &used);
    } catch (const std::exception&) {
      return false;
    }
    return used == text.size();
  }

  // Stores the value and answers the parked requests it completes.
  void set_key(std::string key, std::string value) {
    data_[std::move(key)] = std::move(value);
    for (size_t i = 0; i < parked_.size();) {
      if (answer_if_ready(parked_[i])) {
        parked_.erase(parked_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }

  // Answers `p` when all its keys exist; returns whether it did.
  bool answer_if_ready(const Parked& p) {
    for (const std::string& k : p.keys) {
      if (!data_.count(k)) return false;
    }
    auto it = conns_.find(p.conn);
    if (it == conns_.end()) return true;  // its client left: nothing to answer
    std::string reply;
    put_u8(reply, kOk);
    if (p.op == kGet) {
      put_str(reply, data_[p.keys[0]]);
    } else {
      put_u32(reply, 0);  // no key missing
    }
    it->second.out += frame(reply);
    return true;
  }

  void expire_parked() {
    const auto now = Clock::now();
    for (size_t i = 0; i < parked_.size();) {
      const Parked& p = parked_[i];
      if (p.deadline > now) {
        ++i;
        continue;
      }
      auto it = conns_.find(p.conn);
      if (it != conns_.end()) {
        std::string reply;
        if (p.op == kGet) {
          put_u8(reply, kTimedOut);
        } else {
          std::vector<const std::string*> missing;
          for (const std::string& k : p.keys) {
            if (!data_.count(k)) missing.push_back(&k);
          }
          put_u8(reply, kOk);
          put_u32(reply, static_cast<uint32_t>(missing.size()));
          for (const std::string* k : missing) put_str(reply, *k);
        }
        it->second.out += frame(reply);
      }
      parked_.erase(parked_.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }

  void flush(Conn& conn) {
    while (!conn.out.empty() && !conn.dead) {
      const ssize_t sent = ::send(conn.fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
      if (sent > 0) {
        conn.out.erase(0, static_cast<size_t>(sent));
      } else if (sent < 0 && errno == EINTR) {
        continue;
      } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;  // poll() says when there is room again
      } else {
        conn.dead = true;
      }
    }
  }

  // Closes the connections that ended. A rank that left without BYE was killed or crashed: say so
  // under dspp/lost/<rank>, which wakes whoever waits on it.
  void drop_dead() {
    std::vector<int> lost;
    for (auto it = conns_.begin(); it != conns_.end();) {
      Conn& conn = it->second;
      if (!conn.dead) {
        ++it;
        continue;
      }
      if (conn.rank >= 0 && !conn.bye) lost.push_back(conn.rank);
      ::close(conn.fd);
      const uint64_t id = it->first;
      parked_.erase(std::remove_if(parked_.begin(), parked_.end(),
                                   [id](const Parked& p) { return p.conn == id; }),
                    parked_.end());
      it = conns_.erase(it);
    }
    for (int rank : lost) {
      set_key("dspp/lost/" + std::to_string(rank),
              "rank " + std::to_string(rank) +
                  "'s connection to the store closed without a goodbye (the process exited or "
                  "was killed)");
    }
    if (!lost.empty()) {
      for (auto& [id, conn] : conns_) flush(conn);
    }
  }

  int port_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread thread_;
  // Only the server thread touches what follows (after the constructor starts it).
  std::map<uint64_t, Conn> conns_;
  uint64_t next_id_ = 1;
  std::vector<Parked> parked_;
  std::unordered_map<std::string, std::string> data_;
};

// --- the client ------------------------------------------------------------------------------

class TcpStore final : public Store {
 public:
  TcpStore(const std::string& host, int port, bool is_server, int rank, Millis timeout)
      : host_(host), port_(port), rank_(rank), timeout_(timeout) {
    if (port <= 0 || port > 65535) {
      throw Error(Errc::kInvalidArgument,
                  "store: MASTER_PORT " + std::to_string(port) + " is not a TCP port (1..65535)");
    }
    if (is_server) server_ = std::make_unique<Server>(port);
    // Rank 0 reaches its own server over loopback: it listens on every interface, and this does
    // not depend on MASTER_ADDR naming this host the way this host sees itself.
    connect_with_retry(is_server ? "127.0.0.1" : host);
    std::string body;
    put_u8(body, kHello);
    put_u32(body, kMagic);
    put_u32(body, kVersion);
    put_u32(body, static_cast<uint32_t>(rank));
    std::lock_guard<std::mutex> lock(mu_);
    try {
      call(body, timeout_, "HELLO");
    } catch (...) {
      // The destructor does not run for a throwing constructor.
      if (fd_ >= 0) ::close(fd_);
      throw;
    }
  }

  ~TcpStore() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (fd_ >= 0) {
      // Best effort: a server that is already gone cannot take a goodbye.
      std::string body;
      put_u8(body, kBye);
      const std::string msg = frame(body);
      (void)::send(fd_, msg.data(), msg.size(), MSG_NOSIGNAL);
      ::close(fd_);
      fd_ = -1;
    }
    // server_ (declared first) is destroyed after this body: it stops its thread and closes.
  }

  void set(const std::string& key, const std::string& value) override {
    std::string body;
    put_u8(body, kSet);
    put_str(body, key);
    put_str(body, value);
    std::lock_guard<std::mutex> lock(mu_);
    call(body, timeout_, "set('" + key + "')");
  }

  std::string get(const std::string& key) override {
    std::string body;
    put_u8(body, kGet);
    put_u64(body, static_cast<uint64_t>(timeout_.count()));
    put_str(body, key);
    std::lock_guard<std::mutex> lock(mu_);
    const std::string reply = call(body, answer_window(timeout_), "get('" + key + "')");
    Reader r(reply);
    const uint8_t status = r.u8();
    if (status == kTimedOut) {
      throw Error(Errc::kTimeout, "rank " + std::to_string(rank_) + ": key '" + key +
                                      "' was not set within " + minutes_text(timeout_) +
                                      " (DSPP_TIMEOUT) on rank 0's store at " + where());
    }
    check_ok(status, r, "get('" + key + "')");
    return r.str();
  }

  int64_t add(const std::string& key, int64_t delta) override {
    std::string body;
    put_u8(body, kAdd);
    put_str(body, key);
    put_u64(body, static_cast<uint64_t>(delta));
    std::lock_guard<std::mutex> lock(mu_);
    const std::string reply = call(body, timeout_, "add('" + key + "')");
    Reader r(reply);
    check_ok(r.u8(), r, "add('" + key + "')");
    return static_cast<int64_t>(r.u64());
  }

  bool check(const std::string& key) override {
    std::string body;
    put_u8(body, kCheck);
    put_str(body, key);
    std::lock_guard<std::mutex> lock(mu_);
    const std::string reply = call(body, timeout_, "check('" + key + "')");
    Reader r(reply);
    check_ok(r.u8(), r, "check('" + key + "')");
    return r.u8() != 0;
  }

  std::vector<std::string> wait(const std::vector<std::string>& keys, Millis timeout) override {
    if (timeout < Millis(0)) timeout = Millis(0);
    std::string body;
    put_u8(body, kWait);
    put_u64(body, static_cast<uint64_t>(timeout.count()));
    put_u32(body, static_cast<uint32_t>(keys.size()));
    for (const std::string& k : keys) put_str(body, k);
    std::lock_guard<std::mutex> lock(mu_);
    const std::string reply = call(body, answer_window(timeout), "wait()");
    Reader r(reply);
    check_ok(r.u8(), r, "wait()");
    std::vector<std::string> missing(r.u32());
    for (std::string& k : missing) k = r.str();
    return missing;
  }

  Millis timeout() const override { return timeout_; }

 private:
  std::string where() const { return host_ + ":" + std::to_string(port_); }

  // How long to wait for the answer to a request the server parks for `t`: the server answers at
  // its deadline; the margin covers a slow network or a busy rank 0.
  static Millis answer_window(Millis t) { return t + Millis(10000); }

  [[noreturn]] void lost() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    throw Error(Errc::kRuntime,
                "lost the connection to rank 0's store at " + where() + " (rank 0 exited?)");
  }

  void check_ok(uint8_t status, Reader& r, const std::string& what) {
    if (status == kOk) return;
    const std::string msg = status == kFailed ? r.str() : "unexpected status";
    throw Error(Errc::kRuntime, "rank " + std::to_string(rank_) + ": store " + what + " at " +
                                    where() + ": " + msg);
  }

  // Sends one request and returns the response body. The caller holds mu_.
  std::string call(const std::string& body, Millis window, const std::string& what) {
    if (fd_ < 0) lost();
    const std::string msg = frame(body);
    size_t done = 0;
    while (done < msg.size()) {
      const ssize_t sent = ::send(fd_, msg.data() + done, msg.size() - done, MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) lost();
      done += static_cast<size_t>(sent);
    }
    const auto deadline = Clock::now() + window;
    std::string head = recv_exact(4, deadline, what);
    const uint32_t len = Reader(head).u32();
    if (len == 0 || len > kMaxFrame) lost();
    return recv_exact(len, deadline, what);
  }

  std::string recv_exact(size_t n, Clock::time_point deadline, const std::string& what) {
    std::string out(n, '\0');
    size_t done = 0;
    while (done < n) {
      pollfd p{fd_, POLLIN, 0};
      const int ready = ::poll(&p, 1, poll_timeout(millis_until(deadline)));
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) {
        throw Error(Errc::kRuntime,
                    "store: poll() on the connection to " + where() + " failed: " + errno_text());
      }
      if (ready == 0) {
        // The server answers every parked request by its deadline; silence past it means rank 0
        // is stuck. The stream is now out of step, so the connection cannot be reused.
        ::close(fd_);
        fd_ = -1;
        throw Error(Errc::kTimeout, "rank " + std::to_string(rank_) + ": rank 0's store at " +
                                        where() + " did not answer " + what + " in time");
      }
      const ssize_t got = ::recv(fd_, out.data() + done, n - done, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) lost();
      done += static_cast<size_t>(got);
    }
    return out;
  }

  // Tries one connect to an already resolved address, giving up at the deadline (a SYN to a host
  // that drops it would otherwise block for minutes). Returns the socket or -1 (`error` says why).
  static int try_connect(const addrinfo* ai, Clock::time_point deadline, std::string& error) {
    const int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      error = "socket() failed: " + errno_text();
      return -1;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        error = errno_text();
        ::close(fd);
        return -1;
      }
      pollfd p{fd, POLLOUT, 0};
      int ready;
      do {
        ready = ::poll(&p, 1, poll_timeout(millis_until(deadline)));
      } while (ready < 0 && errno == EINTR);
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (ready <= 0) {
        error = ready == 0 ? "connect() timed out" : "poll() failed: " + errno_text();
        ::close(fd);
        return -1;
      }
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) {
        error = std::strerror(so_error != 0 ? so_error : errno);
        ::close(fd);
        return -1;
      }
    }
    // Blocking from here on: every wait goes through poll() with a deadline anyway.
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
      error = "fcntl() failed: " + errno_text();
      ::close(fd);
      return -1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }

  // Rank 0 may start after the others: retry (1 ms, doubling up to 100 ms) until the timeout.
  void connect_with_retry(const std::string& host) {
    const auto deadline = Clock::now() + timeout_;
    Millis pause(1);
    std::string error = "no attempt";
    const std::string port_text = std::to_string(port_);
    while (true) {
      addrinfo hints{};
      hints.ai_family = AF_INET;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      const int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
      if (rc != 0) {
        // DNS for a freshly started cluster may lag: retry like a refused connection.
        error = "cannot resolve '" + host + "': " + ::gai_strerror(rc);
      } else {
        for (const addrinfo* ai = res; ai && fd_ < 0; ai = ai->ai_next) {
          fd_ = try_connect(ai, deadline, error);
        }
        ::freeaddrinfo(res);
        if (fd_ >= 0) return;
      }
      const int64_t left = millis_until(deadline);
      if (left <= 0) {
        throw Error(Errc::kTimeout, "rank " + std::to_string(rank_) + ": rank 0's store at " +
                                        where() + " did not answer within " +
                                        minutes_text(timeout_) +
                                        " (DSPP_TIMEOUT): rank 0 never started, or "
                                        "MASTER_ADDR/MASTER_PORT are wrong (last attempt: " +
                                        error + ")");
      }
      std::this_thread::sleep_for(std::min(pause, Millis(left)));
      pause = std::min(pause * 2, Millis(100));
    }
  }

  std::string host_;
  int port_;
  int rank_;
  Millis timeout_;
  std::unique_ptr<Server> server_;  // rank 0 only; outlives the client part (declared first)
  std::mutex mu_;                   // one request/response at a time on the connection
  int fd_ = -1;
};

}  // namespace

std::unique_ptr<Store> make_tcp_store(const std::string& host, int port, bool is_server, int rank,
                                      Millis timeout) {
  return std::make_unique<TcpStore>(host, port, is_server, rank, timeout);
}

}  // namespace dspp::dist
