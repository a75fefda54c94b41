#pragma once
// Small helpers shared by the C++ integration drivers (one binary per *_check.cc): a check line
// per assertion and the final tally.

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

namespace integration {

inline int gPassed = 0;
inline int gFailed = 0;

inline void check(bool ok, const std::string& name, const std::string& detail = "") {
  (ok ? gPassed : gFailed)++;
  std::cout << (ok ? "PASS " : "FAIL ") << name << (detail.empty() ? "" : ": " + detail) << std::endl;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace integration
