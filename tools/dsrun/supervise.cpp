#include "supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>

namespace dsrun {
namespace {

using Clock = std::chrono::steady_clock;

// A line longer than this without a newline is written out in pieces rather than held forever.
constexpr size_t kMaxLine = 1 << 20;

// Signals reach the poll loop through this pipe (the self-pipe trick): the handler only writes the
// signal number, which is async-signal-safe, and poll wakes up on it.
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

void check(int rc, const std::string& what) {
  if (rc < 0) throw std::runtime_error(what + ": " + std::strerror(errno));
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? "SIG" + std::string(abbrev) : "signal " + std::to_string(sig);
}

// Writes all of `text`; false when the reader is gone (EPIPE: SIGPIPE is ignored).
bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n >= 0) {
      done += static_cast<size_t>(n);
    } else if (errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, 1000);
    } else if (errno != EINTR) {
      return false;
    }
  }
  return true;
}

void say(const std::string& message) {
  write_all(2, "dsrun: " + message + "\n");
}

// One output stream of a child: the pipe's read end and the start of a line not yet complete.
struct Stream {
  int fd = -1;
  int out_fd = 1;  // where its lines go: dsrun's stdout or stderr
  std::string partial;
};

struct Running {
  const ChildSpec* spec = nullptr;
  pid_t pid = -1;
  int stdin_fd = -1;  // write end of the child's stdin pipe, held open, never written
  Stream out, err;
  bool exited = false;
};

int exit_code_of(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           signal_name(WTERMSIG(status)) + ")";
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}

pid_t spawn(const ChildSpec& spec, Running& r) {
  int out[2], err[2], in[2] = {-1, -1};
  // O_CLOEXEC everywhere: no child may inherit another child's pipe ends, or EOF never comes.
  check(pipe2(out, O_CLOEXEC), "pipe for the stdout of " + spec.label);
  check(pipe2(err, O_CLOEXEC), "pipe for the stderr of " + spec.label);
  if (spec.stdin_pipe) {
    check(pipe2(in, O_CLOEXEC), "pipe for the stdin of " + spec.label);
  } else {
    in[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    check(in[0], "open /dev/null");
  }
  std::vector<char*> argv, envp;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  check(pid, "fork for " + spec.label);
  if (pid == 0) {
    // Its own process group: a terminal's Ctrl-C reaches dsrun only, which forwards it, and
    // kill(-pgid) also reaches whatever the rank started.
    setpgid(0, 0);
    // If dsrun dies without cleaning up (SIGKILL), the kernel kills the child.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(128 + SIGKILL);
    // dsrun ignores SIGPIPE; an ignored signal would stay ignored across exec.
    signal(SIGPIPE, SIG_DFL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execvpe(argv[0], argv.data(), envp.data());
    const std::string msg =
        "dsrun: cannot run '" + spec.argv[0] + "': " + std::strerror(errno) + "\n";
    [[maybe_unused]] ssize_t n = write(2, msg.data(), msg.size());
    _exit(127);
  }
  // Also here, so that kill(-pid) works even before the child has run (EACCES after its exec: ok).
  setpgid(pid, pid);
  close(out[1]);
  close(err[1]);
  close(in[0]);
  r.pid = pid;
  r.stdin_fd = in[1];
  r.out = Stream{out[0], 1, {}};
  r.err = Stream{err[0], 2, {}};
  return pid;
}

class Supervisor {
 public:
  Supervisor(const std::vector<ChildSpec>& specs, const SuperviseOptions& options)
      : options_(options), children_(specs.size()) {
    for (size_t i = 0; i < specs.size(); ++i) children_[i].spec = &specs[i];
  }

  int run() {
    install_signal_handlers();
    for (Running& r : children_) spawn(*r.spec, r);
    while (!done()) step();
    if (failure_code_ >= 0) return failure_code_;
    return interrupt_code_;
  }

 private:
  void install_signal_handlers() {
    check(pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK), "pipe for signals");
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGCHLD})
      check(sigaction(sig, &sa, nullptr), "sigaction " + signal_name(sig));
    signal(SIGPIPE, SIG_IGN);
  }

  bool all_exited() const {
    for (const Running& r : children_)
      if (!r.exited) return false;
    return true;
  }

  bool done() {
    if (!all_exited()) return false;
    bool open = false;
    for (Running& r : children_) open = open || r.out.fd >= 0 || r.err.fd >= 0;
    if (!open) return true;
    // A rank's own children may hold its pipes open after it exited; drain a little, then stop.
    if (Clock::now() < drain_deadline_) return false;
    for (Running& r : children_) {
      finish(r, r.out);
      finish(r, r.err);
    }
    return true;
  }

  void step() {
    std::vector<pollfd> fds;
    fds.push_back({g_signal_pipe[0], POLLIN, 0});
    const bool watch_stdin = options_.stop_on_stdin_eof && !stdin_closed_;
    if (watch_stdin) fds.push_back({0, POLLIN, 0});
    std::vector<std::pair<Running*, Stream*>> streams;
    for (Running& r : children_) {
      for (Stream* s : {&r.out, &r.err}) {
        if (s->fd < 0) continue;
        fds.push_back({s->fd, POLLIN, 0});
        streams.push_back({&r, s});
      }
    }
    const int n = poll(fds.data(), fds.size(), timeout_ms());
    if (n < 0 && errno != EINTR) check(n, "poll");
    if (n > 0) {
      size_t i = 0;
      if (fds[i++].revents) handle_signals();
      if (watch_stdin && fds[i++].revents) handle_stdin();
      for (size_t k = 0; k < streams.size(); ++k, ++i)
        if (fds[i].revents) read_stream(*streams[k].first, *streams[k].second);
    }
    reap();
    if (stopping_ && !killed_ && Clock::now() >= kill_deadline_) {
      say("ranks still running " + std::to_string(options_.grace_ms / 1000.0).substr(0, 3) +
          " s after SIGTERM; sending SIGKILL");
      signal_all(SIGKILL);
      killed_ = true;
    }
  }

  int timeout_ms() const {
    auto until = [](Clock::time_point t) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now());
      return static_cast<int>(std::max<long long>(0, ms.count()) + 1);
    };
    if (all_exited()) return until(drain_deadline_);
    if (stopping_ && !killed_) return std::min(until(kill_deadline_), 1000);
    return 1000;  // SIGCHLD wakes us; this only bounds a lost wake-up
  }

  void handle_signals() {
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(g_signal_pipe[0], sigs, sizeof(sigs))) > 0) {
      for (ssize_t i = 0; i < n; ++i) {
        const int sig = sigs[i];
        if (sig == SIGCHLD) continue;  // reap() runs after every wake-up
        if (stopping_) {
          // A second Ctrl-C: the user does not want to wait for the grace period.
          say("got " + signal_name(sig) + " again; sending SIGKILL");
          signal_all(SIGKILL);
          killed_ = true;
          continue;
        }
        say("got " + signal_name(sig) + "; stopping the " + options_.others);
        if (interrupt_code_ == 0) interrupt_code_ = 128 + sig;
        stop(sig);
      }
    }
  }

  void handle_stdin() {
    char buf[4096];
    const ssize_t n = read(0, buf, sizeof(buf));
    if (n > 0 || (n < 0 && errno == EINTR)) return;  // nobody should write; ignore what comes
    stdin_closed_ = true;
    if (stopping_) return;
    say("stdin closed (the launching dsrun or its ssh session is gone); stopping the " +
        options_.others);
    if (interrupt_code_ == 0) interrupt_code_ = 128 + SIGHUP;
    stop(SIGTERM);
  }

  void read_stream(Running& r, Stream& s) {
    char buf[65536];
    const ssize_t n = read(s.fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      finish(r, s);
      return;
    }
    s.partial.append(buf, static_cast<size_t>(n));
    size_t start = 0, nl;
    while ((nl = s.partial.find('\n', start)) != std::string::npos) {
      emit(r, s, s.partial.substr(start, nl - start));
      start = nl + 1;
    }
    s.partial.erase(0, start);
    if (s.partial.size() > kMaxLine) {
      emit(r, s, s.partial);
      s.partial.clear();
    }
  }

  // End of a stream: a last line without newline is still a line.
  void finish(Running& r, Stream& s) {
    if (s.fd < 0) return;
    if (!s.partial.empty()) emit(r, s, s.partial);
    s.partial.clear();
    close(s.fd);
    s.fd = -1;
  }

  // One write per line, so lines of different ranks never mix inside a line.
  void emit(Running& r, Stream& s, const std::string& line) {
    const bool prefixed = r.spec->keep_rank_lines && line.rfind("[rank ", 0) == 0;
    if (!write_all(s.out_fd, (prefixed ? "" : r.spec->prefix) + line + "\n") && !stopping_) {
      // Our output is gone (the ssh or pdsh session died, or `| head` exited): as a program
      // writing there would die of SIGPIPE, the job stops.
      if (interrupt_code_ == 0) interrupt_code_ = 128 + SIGPIPE;
      stop(SIGTERM);
    }
  }

  void reap() {
    for (Running& r : children_) {
      if (r.exited) continue;
      int status = 0;
      const pid_t pid = waitpid(r.pid, &status, WNOHANG);
      if (pid == 0 || (pid < 0 && errno == EINTR)) continue;
      check(pid, "waitpid for " + r.spec->label);
      r.exited = true;
      if (all_exited()) drain_deadline_ = Clock::now() + std::chrono::seconds(1);
      const int code = exit_code_of(status);
      if (code == 0 || stopping_) continue;  // exits after a stop are the stop's doing
      bool others = false;
      for (const Running& o : children_) others = others || !o.exited;
      say(r.spec->label + " " + describe_exit(status) +
          (others ? "; stopping the other " + options_.others : ""));
      failure_code_ = code;
      stop(SIGTERM);
    }
  }

  void stop(int sig) {
    stopping_ = true;
    kill_deadline_ = Clock::now() + std::chrono::milliseconds(options_.grace_ms);
    signal_all(sig);
    for (Running& r : children_) {
      // An ssh child also learns it from EOF on its stdin (and so does the node-mode dsrun).
      if (r.stdin_fd >= 0) close(r.stdin_fd);
      r.stdin_fd = -1;
    }
  }

  // To each child's whole process group, exited or not: its own children may still run there,
  // and a group id is not reused while any member lives.
  void signal_all(int sig) {
    for (Running& r : children_)
      if (kill(-r.pid, sig) < 0 && errno != ESRCH && errno != EPERM)
        say("kill " + r.spec->label + ": " + std::strerror(errno));
  }

  SuperviseOptions options_;
  std::vector<Running> children_;
  bool stopping_ = false, killed_ = false, stdin_closed_ = false;
  int failure_code_ = -1, interrupt_code_ = 0;
  Clock::time_point kill_deadline_, drain_deadline_;
};

}  // namespace

int supervise(const std::vector<ChildSpec>& children, const SuperviseOptions& options) {
  return Supervisor(children, options).run();
}

}  // namespace dsrun
