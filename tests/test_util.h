// Small helpers every test file uses.
#pragma once

#include <dspp/error.h>

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
