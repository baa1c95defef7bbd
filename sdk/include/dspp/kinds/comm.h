// Plugin kind `comm`: collectives and point-to-point transfers over flat buffers (Gloo on CPUs,
// NCCL on GPUs). Calls are asynchronous and return a handle to wait on.
#ifndef DSPP_KINDS_COMM_H
#define DSPP_KINDS_COMM_H

#include <dspp/abi.h>

#ifdef __cplusplus
namespace dspp {

enum ReduceOp : int32_t { kReduceSum = 0, kReduceAvg = 1, kReduceMax = 2, kReduceMin = 3 };

// The host's key-value store (rendezvous), handed to the comm plugin to exchange addresses/ids.
// Every blocking call gives up after the store's timeout with DSPP_ERR_TIMEOUT and a message.
struct KvStore {
  void* self;
  dspp_status (*set)(void* self, const char* key, const void* value, size_t len);
  // Blocks until the key exists or the store's timeout passes; the host owns *value until the next
  // call from this thread.
  dspp_status (*get)(void* self, const char* key, const void** value, size_t* len);
  dspp_status (*add)(void* self, const char* key, int64_t delta, int64_t* result);
  // Does not block: *exists = 1 when the key is set now.
  dspp_status (*check)(void* self, const char* key, int32_t* exists);
};

// What init_world gets: the store, this process's place, and how long any blocking call may take.
struct CommInitArgs {
  const KvStore* store;
  int32_t rank;
  int32_t world_size;
  int32_t local_rank;
  const char* local_addr;  // an address of this host its peers can reach (e.g. "127.0.0.1")
  const char* prefix;      // prefix for every store key this world uses (unique per run)
  int64_t timeout_ms;      // a collective or connect that takes longer fails with DSPP_ERR_TIMEOUT
};

class CommWork {
 public:
  virtual dspp_status wait() noexcept = 0;
  virtual void release() noexcept = 0;  // frees the handle; waits first if still pending

 protected:
  ~CommWork() = default;
};

// A group of processes. Operations on one communicator run in the order they are issued (every
// member issues the same sequence); buffers are contiguous, of one dtype, on the device the plugin
// serves (host memory for gloo) and must stay valid until the work is waited for. Avg on integer
// dtypes is an error. A failed or timed-out operation leaves the communicator unusable: every
// later call fails with the first error.
class Communicator {
 public:
  virtual int32_t rank() const noexcept = 0;
  virtual int32_t size() const noexcept = 0;
  // `ranks` lists the members of the new group in global ranks; every member calls with the same
  // list. Non-members get *out = NULL.
  virtual dspp_status split(const int32_t* ranks, int32_t n, const char* tag,
                            Communicator** out) noexcept = 0;
  virtual void release() noexcept = 0;

  // In place.
  virtual dspp_status all_reduce(dspp_tensor_view buf, int32_t op, CommWork** work) noexcept = 0;
  // in has size() * out elements; each rank receives its reduced slice.
  virtual dspp_status reduce_scatter(dspp_tensor_view in, dspp_tensor_view out, int32_t op,
                                     CommWork** work) noexcept = 0;
  // out has size() * in elements, rank-major.
  virtual dspp_status all_gather(dspp_tensor_view in, dspp_tensor_view out,
                                 CommWork** work) noexcept = 0;
  virtual dspp_status broadcast(dspp_tensor_view buf, int32_t root, CommWork** work) noexcept = 0;
  virtual dspp_status send(dspp_tensor_view buf, int32_t peer, int32_t tag,
                           CommWork** work) noexcept = 0;
  virtual dspp_status recv(dspp_tensor_view buf, int32_t peer, int32_t tag,
                           CommWork** work) noexcept = 0;
  virtual dspp_status barrier() noexcept = 0;
  // In place: `root` (index in the group) receives the reduction; the other ranks' buffers are
  // left unspecified. Optional: a plugin without it answers DSPP_ERR_NOT_SUPPORTED (setting no
  // message), and callers then fall back to all_reduce.
  virtual dspp_status reduce(dspp_tensor_view buf, int32_t root, int32_t op,
                             CommWork** work) noexcept {
    (void)buf, (void)root, (void)op;
    *work = nullptr;
    return DSPP_ERR_NOT_SUPPORTED;
  }

 protected:
  ~Communicator() = default;
};

// The object a comm plugin's create() returns: makes the world communicator from the store.
class CommBackend {
 public:
  virtual dspp_status init_world(const CommInitArgs* args, Communicator** out) noexcept = 0;

 protected:
  ~CommBackend() = default;
};

}  // namespace dspp
#endif
#endif
