// Plugin statuses become dspp::Error on the host side, carrying the message the plugin reported.
#include <dspp/error.h>

#include <string>

namespace dspp {
namespace {

const char* status_name(dspp_status status) {
  switch (status) {
    case DSPP_OK:
      return "ok";
    case DSPP_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case DSPP_ERR_NOT_SUPPORTED:
      return "not supported";
    case DSPP_ERR_OUT_OF_MEMORY:
      return "out of memory";
    case DSPP_ERR_RUNTIME:
      return "runtime error";
    case DSPP_ERR_TIMEOUT:
      return "timeout";
    case DSPP_ERR_COMM:
      return "communication error";
    case DSPP_ERR_INTERNAL:
      return "internal error";
  }
  return "unknown status";
}

}  // namespace

void check_plugin(dspp_status status, const std::string& what) {
  if (status == DSPP_OK) return;
  const std::string& message = last_plugin_error();
  std::string text = what + ": ";
  text += message.empty() ? "the plugin reported no message" : message;
  text += " (status " + std::to_string(status) + ": " + status_name(status) + ")";
  throw Error(status == DSPP_ERR_TIMEOUT ? Errc::kTimeout : Errc::kPlugin, text);
}

}  // namespace dspp
