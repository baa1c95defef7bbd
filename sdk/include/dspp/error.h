// The host-side exception. Everything libdspp reports goes through dspp::Error: the message names
// the key, file or rank at fault. Plugin statuses become dspp::Error in check_plugin().
#ifndef DSPP_ERROR_H
#define DSPP_ERROR_H

#include <dspp/abi.h>

#include <stdexcept>
#include <string>

namespace dspp {

enum class Errc {
  kConfig,           // a bad config: key, type, range, batch arithmetic
  kPlugin,           // a plugin could not be found, loaded or created
  kInvalidArgument,  // a bad argument to a dspp API
  kRuntime,          // anything else at run time
  kTimeout,          // a peer that never answered
  kIo,               // a file that could not be read or written
};

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

// The message the last failing plugin call on this thread reported through dspp_host_api.
const std::string& last_plugin_error();

// Throws dspp::Error(kPlugin) "<what>: <plugin message> (status N)" when status != DSPP_OK.
void check_plugin(dspp_status status, const std::string& what);

}  // namespace dspp

#endif  // DSPP_ERROR_H
