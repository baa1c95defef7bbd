// DeepSpeed's CSV monitor; see csv_monitor.h.
#include "monitor/csv_monitor.h"

#include <dspp/error.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace dspp::monitor {

std::string python_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  // The shortest digits that round-trip, as "d.ddde±XX"; Python shows them in fixed notation
  // when the decimal exponent is in [-4, 16) and in scientific notation otherwise.
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(r.ptr - buf));
  const size_t e = sci.find('e');
  std::string sign;
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c == '-') sign = "-";
    if (c >= '0' && c <= '9') digits += c;
  }
  const int exp = std::atoi(std::string(sci.substr(e + 1)).c_str());
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else {
      const size_t int_len = static_cast<size_t>(exp) + 1;
      if (digits.size() < int_len) digits.append(int_len - digits.size(), '0');
      out = digits.substr(0, int_len) + "." +
            (digits.size() > int_len ? digits.substr(int_len) : std::string("0"));
    }
    return sign + out;
  }
  std::string mant = digits.substr(0, 1);
  if (digits.size() > 1) mant += "." + digits.substr(1);
  const int a = exp < 0 ? -exp : exp;
  return sign + mant + (exp < 0 ? "e-" : "e+") + (a < 10 ? "0" : "") + std::to_string(a);
}

CsvMonitor::CsvMonitor(const std::string& output_path, const std::string& job_name) {
  log_dir_ = (std::filesystem::path(output_path) / job_name).string();
  std::error_code ec;
  std::filesystem::create_directories(log_dir_, ec);
  if (ec) {
    throw Error(Errc::kIo,
                "csv_monitor: cannot create the folder '" + log_dir_ + "': " + ec.message());
  }
}

std::string CsvMonitor::file_of(const std::string& name) const {
  std::string file = name;
  for (char& c : file) {
    if (c == '/' || c == ' ') c = '_';
  }
  return log_dir_ + "/" + file + ".csv";
}

void CsvMonitor::write_events(const std::vector<Event>& events) {
  for (const Event& ev : events) {
    const std::string path = file_of(ev.name);
    std::ofstream out(path, std::ios::app);
    if (!out) throw Error(Errc::kIo, "csv_monitor: cannot open '" + path + "' for appending");
    if (started_.insert(path).second) {
      const size_t slash = ev.name.rfind('/');
      out << "step," << (slash == std::string::npos ? ev.name : ev.name.substr(slash + 1))
          << "\r\n";
    }
    // Python's csv.writer ends rows with "\r\n".
    out << ev.step << "," << python_float(ev.value) << "\r\n";
    out.flush();
    if (!out) throw Error(Errc::kIo, "csv_monitor: cannot write '" + path + "'");
  }
}

}  // namespace dspp::monitor
