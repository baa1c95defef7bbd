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
  // Built by appending only: GCC 12 at -O3 reports a false -Wrestrict on string operator+ chains.
  std::string out;
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c == '-') out.push_back('-');
    if (c >= '0' && c <= '9') digits.push_back(c);
  }
  const int exp = std::atoi(std::string(sci.substr(e + 1)).c_str());
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out.append("0.").append(static_cast<size_t>(-exp - 1), '0').append(digits);
    } else {
      const size_t int_len = static_cast<size_t>(exp) + 1;
      if (digits.size() < int_len) digits.append(int_len - digits.size(), '0');
      out.append(digits, 0, int_len).push_back('.');
      if (digits.size() > int_len) {
        out.append(digits, int_len, std::string::npos);
      } else {
        out.push_back('0');
      }
    }
    return out;
  }
  out.push_back(digits[0]);
  if (digits.size() > 1) out.append(".").append(digits, 1, std::string::npos);
  const int a = exp < 0 ? -exp : exp;
  out.append(exp < 0 ? "e-" : "e+");
  if (a < 10) out.push_back('0');
  out.append(std::to_string(a));
  return out;
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
