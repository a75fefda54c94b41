#pragma once
// The exec and raw_exec drivers (see driver.h for what each isolates and README.md for the start
// sequence).

#include <string>
#include <vector>

#include "nodeagent/driver/driver.h"

namespace nodeagent {

struct ExecDriverOptions {
  bool isolate = true;                   // false: raw_exec (cgroup only, argv[0] on the host)
  std::string cgroupParent = "foxden";   // task cgroups are <cgroupParent>/<TaskLaunch::id>
  std::string cgroupRoot = "/sys/fs/cgroup";
  std::string stateDir = "/run/foxden/exec";  // <id>: "initPid startTicks taskDir" for re-attach
  bool seccomp = true;
  std::vector<std::string> maskedPaths = {
      "/proc/acpi",        "/proc/asound",      "/proc/kcore",      "/proc/keys",
      "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
      "/proc/scsi",        "/proc/sysrq-trigger"};
  std::vector<std::string> readOnlyPaths = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"};
  int startTimeoutMs = 30000;            // how long start() waits for the task's execve
  bool traceStarts = false;              // log each start's phases (prepare, cgroup, clone, exec)
  int zygoteFd = -1;                     // startZygote()'s socket: inits are cloned there; -1: here
  size_t spareCgroups = 0;               // cgroup v1: empty task cgroups kept ready (kSparePrefix<n>)
};

// The names of the spare cgroups among the task cgroups: never a task id (<allocation uid>.<task>).
inline constexpr const char* kSparePrefix = "spare-";

DriverPtr newExecDriver(ExecDriverOptions options = {});
DriverPtr newRawExecDriver(ExecDriverOptions options = {});

// The default seccomp profile as classic BPF (default allow; deny list in exec_driver.cc), built
// with libseccomp. Exposed for tests.
[[nodiscard]] kube::StatusOr<std::vector<unsigned char>> buildSeccompProgram();

}  // namespace nodeagent
