// The dependency of needs_dep.cpp's plugin.
extern "C" __attribute__((visibility("default"))) double dspp_tp_dep_factor() {
  return 3.0;
}
