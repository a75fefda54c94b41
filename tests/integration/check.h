#pragma once
// Small helpers shared by the C++ integration drivers (one binary per *_check.cc): a check line
// per assertion and the final tally.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

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

// The cgroup v1 hierarchies the exec driver creates task cgroups in.
inline const char* const kHierarchies[] = {"cpu", "cpuacct", "memory", "pids", "devices", "freezer", "cpuset"};

// Kills whatever is left in the task cgroups under `parent` and removes them and `parent`.
inline void removeTaskCgroups(const std::string& parent) {
  for (const char* h : kHierarchies) {
    std::string base = std::string("/sys/fs/cgroup/") + h + "/" + parent;
    std::error_code ec;
    if (!std::filesystem::exists(base, ec)) continue;
    for (const auto& e : std::filesystem::directory_iterator(base, ec)) {
      if (!e.is_directory()) continue;
      for (int i = 0; i < 50; ++i) {
        std::istringstream procs(slurp(e.path().string() + "/cgroup.procs"));
        pid_t pid;
        bool any = false;
        while (procs >> pid) {
          kill(pid, SIGKILL);
          any = true;
        }
        if (!any) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      rmdir(e.path().c_str());
    }
    rmdir(base.c_str());
  }
}

}  // namespace integration
