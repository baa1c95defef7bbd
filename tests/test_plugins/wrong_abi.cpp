// A library built for a future ABI major: it exports dspp_plugin_entry_v2 only, written by hand
// as such a plugin would be, so the host must recognise and refuse it without reading the table.
#include <dspp/abi.h>

namespace {
const dspp_plugin_library kLibrary = {
    sizeof(dspp_plugin_library), 2, 0, "test_wrong_abi", nullptr, 0};
}  // namespace

extern "C" DSPP_EXPORT const dspp_plugin_library* dspp_plugin_entry_v2(void) {
  return &kLibrary;
}
