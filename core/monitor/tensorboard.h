// DeepSpeed's TensorBoard monitor (deepspeed/monitor/tensorboard.py, which writes through torch's
// SummaryWriter): one event file under <output_path>/<job_name>/, named as TensorBoard's own
// writer names it, events.out.tfevents.<10-digit unix seconds>.<hostname>.<pid>.<n> (n counts the
// files this process opened, so two monitors in one second never share a file). The file is a
// sequence of TFRecords: uint64 length, masked CRC-32C of the length, the serialized Event,
// masked CRC-32C of the Event, all little-endian. The first Event carries file_version
// "brain.Event:2"; then each scalar is one Event {wall_time, step, summary {tag, simple_value}}
// (add_scalar's layout). Every write_events call is flushed, as DeepSpeed flushes after each.
// The engine creates it on global rank 0 only. Defaults (DeepSpeed's TensorBoardConfig):
// output_path "" (the folder is job_name under the launch directory), job_name
// "DeepSpeedJobName".
//
// The events are protobuf messages (tensorboard_event.proto); a libdspp built without protobuf
// (DSPP_TENSORBOARD=OFF, or AUTO with no protobuf found) has the class, and its constructor throws.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "monitor/event.h"

namespace dspp::monitor {

// Whether this libdspp can write TensorBoard event files (built with protobuf).
bool tensorboard_available();

// "brain.Event:2": the version TensorBoard expects in the first record of a file.
inline constexpr const char* kTensorBoardFileVersion = "brain.Event:2";

// TFRecord's masked CRC: a CRC of data that itself holds CRCs is rotated and offset so that it
// does not look like one.
uint32_t tfrecord_masked_crc(const void* data, size_t size);

class TensorBoardMonitor final : public Monitor {
 public:
  // Creates the folder and the event file and writes the file_version record. Throws
  // Error(kIo) when either cannot be made, Error(kConfig) when built without protobuf.
  TensorBoardMonitor(const std::string& output_path, const std::string& job_name);
  TensorBoardMonitor(const TensorBoardMonitor&) = delete;
  TensorBoardMonitor& operator=(const TensorBoardMonitor&) = delete;

  // One Event per scalar, stamped with the current wall time; flushed before returning, so a
  // crashed run keeps every event written.
  void write_events(const std::vector<Event>& events) override;

  const std::string& log_dir() const { return log_dir_; }
  const std::string& file() const { return file_; }  // the event file's path

 private:
  void write_record(const std::string& data);

  std::string log_dir_;
  std::string file_;
  std::ofstream out_;
};

}  // namespace dspp::monitor
