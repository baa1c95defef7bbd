// host-app: the smallest embedder of dspp. Lists every plugin dspp finds, then loads a scheduler
// by its config name and prints its learning rates.
//
//   host-app [SCHEDULER_NAME]     (default: example_step_decay, from examples/plugin-example)
#include <dspp/error.h>
#include <dspp/kinds/scheduler.h>
#include <dspp/plugins.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string name = argc > 1 ? argv[1] : "example_step_decay";
  try {
    dspp::PluginRegistry registry;
    try {
      // Built-ins, DSPP_PLUGIN_PATH, the install folder (a config adds its plugin_paths).
      registry.scan(dspp::PluginRegistry::search_path());
    } catch (const dspp::Error& e) {
      // A refused library does not hide the good ones: report it and go on.
      std::fprintf(stderr, "host-app: warning: %s\n", e.what());
    }
    for (const dspp::PluginInfo* p : registry.list())
      std::printf("%s %s %s\n", p->kind.c_str(), p->name.c_str(), p->version.c_str());

    // Lookup is case-insensitive, as config strings are. No config view: the plugin's defaults.
    // A real host passes dspp::Config's view of "scheduler.params".
    auto sched = registry.create<dspp::Scheduler>("scheduler", name, nullptr);
    const double base_lr = 0.1;
    dspp::check_plugin(sched->init(&base_lr, 1), name + " init");
    for (int64_t step : {0, 9, 10, 25}) {
      double lr = 0;
      dspp::check_plugin(sched->lr_at(step, &lr), name + " lr_at");
      std::printf("lr(step=%lld) = %g\n", static_cast<long long>(step), lr);
    }
    return 0;
  } catch (const dspp::Error& e) {
    std::fprintf(stderr, "host-app: error: %s\n", e.what());
    return 1;
  }
}
