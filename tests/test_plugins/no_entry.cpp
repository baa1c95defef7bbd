// A shared library that is not a dspp plugin: it exports no entry symbol at all.
extern "C" int dspp_test_not_a_plugin(int x) {
  return x + 1;
}
