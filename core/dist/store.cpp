// The file store, the timeout setting, and the C adapter comm plugins see. (The TCP store is in
// store_tcp.cpp.)
#include "dist/store.h"

#include <dspp/error.h>
#include <dspp/plugins.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace dspp::dist {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string minutes_text(Millis t) {
  std::ostringstream s;
  s << static_cast<double>(t.count()) / 60000.0 << " min";
  return s.str();
}

// Keys may hold '/', which becomes a file-name-safe escape.
std::string file_name_of(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') {
      out += c;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    }
  }
  return out;
}

class FileStore final : public Store {
 public:
  FileStore(const std::string& dir, Millis timeout) : dir_(dir), timeout_(timeout) {
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec || !fs::is_directory(dir_)) {
      throw Error(Errc::kIo, "file store: cannot create directory '" + dir + "': " + ec.message());
    }
  }

  void set(const std::string& key, const std::string& value) override {
    write_file(path_of(key), value);
  }

  std::string get(const std::string& key) override {
    std::vector<std::string> missing = wait({key}, timeout_);
    if (!missing.empty()) {
      throw Error(Errc::kTimeout, "file store " + dir_.string() + ": key '" + key +
                                      "' was not set within " + minutes_text(timeout_) +
                                      " (DSPP_TIMEOUT)");
    }
    std::string value;
    read_file(path_of(key), value);
    return value;
  }

  int64_t add(const std::string& key, int64_t delta) override {
    // One lock file serialises every add(); the value itself is replaced by rename.
    const fs::path lock_path = dir_ / ".add.lock";
    int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR, 0644);
    if (fd < 0) {
      throw Error(Errc::kIo,
                  "file store: cannot open " + lock_path.string() + ": " + std::strerror(errno));
    }
    if (::flock(fd, LOCK_EX) != 0) {
      ::close(fd);
      throw Error(Errc::kIo,
                  "file store: cannot lock " + lock_path.string() + ": " + std::strerror(errno));
    }
    int64_t value = 0;
    std::string text;
    if (read_file(path_of(key), text) && !text.empty()) value = std::stoll(text);
    value += delta;
    try {
      write_file(path_of(key), std::to_string(value));
    } catch (...) {
      ::flock(fd, LOCK_UN);
      ::close(fd);
      throw;
    }
    ::flock(fd, LOCK_UN);
    ::close(fd);
    return value;
  }

  bool check(const std::string& key) override { return fs::exists(path_of(key)); }

  std::vector<std::string> wait(const std::vector<std::string>& keys, Millis timeout) override {
    const auto deadline = Clock::now() + timeout;
    std::vector<std::string> missing = keys;
    Millis pause(1);
    while (true) {
      std::vector<std::string> still;
      for (const std::string& k : missing) {
        if (!check(k)) still.push_back(k);
      }
      missing.swap(still);
      if (missing.empty() || Clock::now() >= deadline) return missing;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, Millis(50));
    }
  }

  Millis timeout() const override { return timeout_; }

 private:
  fs::path path_of(const std::string& key) const { return dir_ / file_name_of(key); }

  static void write_file(const fs::path& path, const std::string& value) {
    // A unique temporary name per writer, then rename: readers see the old value or the new one.
    fs::path tmp = path;
    tmp += ".tmp." + std::to_string(::getpid()) + "." +
           std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(value.data(), static_cast<std::streamsize>(value.size()));
      out.flush();
      if (!out) throw Error(Errc::kIo, "file store: cannot write " + tmp.string());
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) {
      throw Error(Errc::kIo, "file store: cannot rename " + tmp.string() + " to " + path.string() +
                                 ": " + ec.message());
    }
  }

  static bool read_file(const fs::path& path, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::ostringstream s;
    s << in.rdbuf();
    out = s.str();
    return true;
  }

  fs::path dir_;
  Millis timeout_;
};

dspp_status fail(const std::exception& e) {
  const dspp_host_api* host = host_api();
  const Error* de = dynamic_cast<const Error*>(&e);
  dspp_status code = (de && de->code() == Errc::kTimeout) ? DSPP_ERR_TIMEOUT : DSPP_ERR_RUNTIME;
  return host->set_error(host->self, code, e.what());
}

thread_local std::string t_value;  // what get() hands out, valid until the next call

}  // namespace

std::unique_ptr<Store> make_file_store(const std::string& dir, Millis timeout) {
  return std::make_unique<FileStore>(dir, timeout);
}

Millis timeout_from_env() {
  const char* name = "DSPP_TIMEOUT";
  const char* text = std::getenv(name);
  if (!text || !*text) {
    name = "DEEPSPEED_TIMEOUT";
    text = std::getenv(name);
  }
  if (!text || !*text) return Millis(10 * 60 * 1000);
  char* end = nullptr;
  double minutes = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(minutes > 0) || !std::isfinite(minutes)) {
    throw Error(Errc::kInvalidArgument, std::string("environment variable ") + name + "='" + text +
                                            "' is not a positive number of minutes");
  }
  return Millis(static_cast<int64_t>(std::ceil(minutes * 60000.0)));
}

KvStoreAdapter::KvStoreAdapter(Store& store) : store_(store) {
  kv_.self = this;
  kv_.set = [](void* self, const char* key, const void* value, size_t len) -> dspp_status {
    try {
      static_cast<KvStoreAdapter*>(self)->store_.set(
          key, std::string(static_cast<const char*>(value), len));
      return DSPP_OK;
    } catch (const std::exception& e) {
      return fail(e);
    }
  };
  kv_.get = [](void* self, const char* key, const void** value, size_t* len) -> dspp_status {
    try {
      t_value = static_cast<KvStoreAdapter*>(self)->store_.get(key);
      *value = t_value.data();
      *len = t_value.size();
      return DSPP_OK;
    } catch (const std::exception& e) {
      return fail(e);
    }
  };
  kv_.add = [](void* self, const char* key, int64_t delta, int64_t* result) -> dspp_status {
    try {
      *result = static_cast<KvStoreAdapter*>(self)->store_.add(key, delta);
      return DSPP_OK;
    } catch (const std::exception& e) {
      return fail(e);
    }
  };
  kv_.check = [](void* self, const char* key, int32_t* exists) -> dspp_status {
    try {
      *exists = static_cast<KvStoreAdapter*>(self)->store_.check(key) ? 1 : 0;
      return DSPP_OK;
    } catch (const std::exception& e) {
      return fail(e);
    }
  };
}

}  // namespace dspp::dist
