// The rendezvous key-value store: how the ranks of a run find each other, exchange comm ids and
// plugin digests, and learn which rank went missing. Two kinds: a TCP store served by rank 0 (the
// default, like torch's TCPStore) and a file store on a filesystem every rank shares.
//
// Every blocking call gives up after `timeout()` and throws Error(Errc::kTimeout) with a message
// that names the key(s) still missing, so a rank that never arrives is an error, never a hang.
#pragma once

#include <dspp/kinds/comm.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dspp::dist {

using Millis = std::chrono::milliseconds;

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  // Blocks until the key exists (or the timeout passes: Error(kTimeout) naming the key).
  virtual std::string get(const std::string& key) = 0;
  // Atomically adds delta to the integer stored at key (absent = 0) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Does not block.
  virtual bool check(const std::string& key) = 0;
  // Waits until every key exists or `timeout` passes; returns the keys still missing (empty when
  // all arrived). Never throws for a timeout: the caller turns the missing keys into a message.
  virtual std::vector<std::string> wait(const std::vector<std::string>& keys, Millis timeout) = 0;
  virtual Millis timeout() const = 0;
};

// The TCP store. Rank 0 (`is_server`) listens on host:port and also connects to itself; the other
// ranks connect, retrying until the timeout ("rank 0's store at host:port did not answer"). Each
// client announces `rank`; when a client's connection drops without a clean close, the server
// sets the key "dspp/lost/<rank>" so the survivors can name the rank that died. The server keeps
// serving until the object is destroyed.
std::unique_ptr<Store> make_tcp_store(const std::string& host, int port, bool is_server, int rank,
                                      Millis timeout);

// The file store: one file per key under `dir` (created if absent), written to a temporary name
// and renamed, so readers never see half a value; add() serialises through an flock'ed file.
std::unique_ptr<Store> make_file_store(const std::string& dir, Millis timeout);

// DSPP_TIMEOUT (minutes, fractions allowed; DEEPSPEED_TIMEOUT is read when it is unset),
// default 10. Throws Error(kInvalidArgument) naming the variable when it is not a positive number.
Millis timeout_from_env();

// The C view of a store that comm plugins get (dspp::KvStore). Errors become statuses with the
// message set through the host API. The adapter must not outlive `store`.
class KvStoreAdapter {
 public:
  explicit KvStoreAdapter(Store& store);
  const KvStore* c() const { return &kv_; }

 private:
  Store& store_;
  KvStore kv_;
};

}  // namespace dspp::dist
