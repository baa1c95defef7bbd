// DeepSpeed's csv_monitor (deepspeed/monitor/csv_monitor.py): one CSV file per event name under
// <output_path>/<job_name>/, the name with '/' and ' ' replaced by '_', a header line
// "step,<last part of the name>" the first time this process writes the file, then one
// "step,value" row per event, appended (a file from an earlier run is continued, as in DeepSpeed).
// The engine creates it on global rank 0 only.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "monitor/event.h"

namespace dspp::monitor {

// Python's repr() of a float (shortest round trip; "2.0", "1e-05", "0.0001"), which is what
// DeepSpeed's csv.writer writes for the values.
std::string python_float(double v);

class CsvMonitor final : public Monitor {
 public:
  // Creates the folder. An empty output_path is the launch directory (DeepSpeed joins "" and
  // job_name, which is a relative path too).
  CsvMonitor(const std::string& output_path, const std::string& job_name);

  // Appends each event to its file and flushes it, so a crashed run keeps every row written.
  void write_events(const std::vector<Event>& events) override;

  const std::string& log_dir() const { return log_dir_; }
  // The file an event name goes to.
  std::string file_of(const std::string& name) const;

 private:
  std::string log_dir_;
  std::set<std::string> started_;  // files this process has written the header of
};

}  // namespace dspp::monitor
