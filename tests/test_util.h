// Small helpers every test file uses.
#pragma once

#include <dspp/error.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

// Runs fn and returns the dspp::Error message it throws, or "" when it throws none.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const dspp::Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// What a tool run printed, apart, and its exit status (-1: ended by a signal).
struct ToolRun {
  int rc = -1;
  std::string out;
  std::string err;
};

// Runs `exe args` through the shell (args already quoted where needed). stderr goes through a
// file named by the pid: CTest runs a binary's test cases as parallel processes.
inline ToolRun run_tool(const std::string& exe, const std::string& args) {
  static int serial = 0;
  const std::filesystem::path err =
      std::filesystem::temp_directory_path() /
      ("dspp_tool_" + std::to_string(::getpid()) + "_" + std::to_string(++serial) + ".err");
  const std::string cmd = "'" + exe + "' " + args + " 2>'" + err.string() + "'";
  ToolRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  std::filesystem::remove(err);
  return r;
}
