// One monitor event, as DeepSpeed's monitors take them: (name, value, step). Shared by the CSV and
// TensorBoard monitors so the engine builds its event list once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dspp::monitor {

struct Event {
  std::string name;  // e.g. "Train/Samples/train_loss"
  double value = 0.0;
  int64_t step = 0;  // DeepSpeed's x axis for Train/Samples/*: global_samples
};

// What the engine writes events to (DeepSpeed's MonitorMaster fans out the same way).
class Monitor {
 public:
  virtual ~Monitor() = default;
  virtual void write_events(const std::vector<Event>& events) = 0;
};

}  // namespace dspp::monitor
