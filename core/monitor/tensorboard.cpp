// DeepSpeed's TensorBoard monitor; see tensorboard.h.
#include "monitor/tensorboard.h"

#include <dspp/error.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "monitor/crc32c.h"

#if DSPP_HAVE_TENSORBOARD
#include "monitor/tensorboard_event.pb.h"
#endif

namespace dspp::monitor {

namespace {

double wall_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// TensorBoard's writer names a file "events.out.tfevents.%010d.<host>.<pid>.<uid>", the uid a
// process-wide counter from 0.
std::string event_file_name() {
  static std::atomic<uint64_t> next_uid{0};
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "localhost");
  const auto secs = static_cast<long long>(wall_time_now());
  char head[64];
  std::snprintf(head, sizeof head, "events.out.tfevents.%010lld.", secs);
  return std::string(head) + host + "." + std::to_string(::getpid()) + "." +
         std::to_string(next_uid.fetch_add(1));
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

}  // namespace

bool tensorboard_available() {
  return DSPP_HAVE_TENSORBOARD != 0;
}

uint32_t tfrecord_masked_crc(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

TensorBoardMonitor::TensorBoardMonitor(const std::string& output_path,
                                       const std::string& job_name) {
  if (!tensorboard_available()) {
    throw Error(Errc::kConfig,
                "tensorboard.enabled: this libdspp was built without protobuf "
                "(DSPP_TENSORBOARD=OFF or libprotobuf-dev/protobuf-compiler not found), so it "
                "cannot write TensorBoard event files; use csv_monitor, or rebuild with them");
  }
  log_dir_ = (std::filesystem::path(output_path) / job_name).string();
  std::error_code ec;
  std::filesystem::create_directories(log_dir_, ec);
  if (ec) {
    throw Error(Errc::kIo,
                "tensorboard: cannot create the folder '" + log_dir_ + "': " + ec.message());
  }
  file_ = (std::filesystem::path(log_dir_) / event_file_name()).string();
  out_.open(file_, std::ios::binary | std::ios::trunc);
  if (!out_) throw Error(Errc::kIo, "tensorboard: cannot create the event file '" + file_ + "'");
#if DSPP_HAVE_TENSORBOARD
  dspp::tensorboard::Event ev;
  ev.set_wall_time(wall_time_now());
  ev.set_file_version(kTensorBoardFileVersion);
  write_record(ev.SerializeAsString());
  out_.flush();
  if (!out_) throw Error(Errc::kIo, "tensorboard: cannot write '" + file_ + "'");
#endif
}

void TensorBoardMonitor::write_record(const std::string& data) {
  std::string rec;
  rec.reserve(data.size() + 16);
  put_le(rec, data.size(), 8);
  put_le(rec, tfrecord_masked_crc(rec.data(), 8), 4);
  rec += data;
  put_le(rec, tfrecord_masked_crc(data.data(), data.size()), 4);
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
}

void TensorBoardMonitor::write_events([[maybe_unused]] const std::vector<Event>& events) {
#if DSPP_HAVE_TENSORBOARD
  for (const Event& e : events) {
    dspp::tensorboard::Event ev;
    ev.set_wall_time(wall_time_now());
    ev.set_step(e.step);
    dspp::tensorboard::Summary::Value* v = ev.mutable_summary()->add_value();
    v->set_tag(e.name);
    // add_scalar stores a float32, as TensorBoard's simple_value is.
    v->set_simple_value(static_cast<float>(e.value));
    write_record(ev.SerializeAsString());
  }
  out_.flush();
  if (!out_) throw Error(Errc::kIo, "tensorboard: cannot write '" + file_ + "'");
#endif
}

}  // namespace dspp::monitor
