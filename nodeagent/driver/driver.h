#pragma once
// Task drivers: how the agent starts, watches, stops and re-attaches to one task's processes.
//
//   exec      new mount, pid, ipc and uts namespaces; a root of read-only host bind mounts (or of
//             an unpacked rootfs tarball's tree) plus the writable task directories and volumes; pivot_root; fresh /proc with masked paths; minimal /dev
//             plus the assigned device nodes; capabilities dropped, no_new_privs, seccomp; a
//             non-root user; one cgroup with cpu, memory, pids and device limits.
//   raw_exec  the cgroup only (opt-in per worker).
//
// Each task runs under a tiny init forked from the agent (never an exec of the agent's binary):
// PID 1 of the task's PID namespace. It reaps orphans, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/
// SIGUSR1/SIGUSR2 to the task, and writes the task's wait status to `<taskDir>/.foxden/exit` before
// it exits with the same status. That file is how a restarted agent learns how a task it did not
// fork ended; the init is the one extra process per task, and it is inside the task's cgroup.
// With TaskLaunch::logDir the init also copies the task's stdout/stderr pipes into rotated files,
// so an agent crash neither loses output nor SIGPIPEs the task.
//
// Thread safety: a Driver may be used from several threads at once.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kube/status.h"

namespace nodeagent {

struct CgroupLimits {
  int64_t cpuShares = 1024;     // relative weight (cpu.shares), from requests.cpu (1000m = 1024)
  int64_t cpuQuotaMicros = 0;   // per 100 ms period, from limits.cpu; 0 = no cap
  int64_t memoryBytes = 0;      // limits.memory; 0 = none
  int64_t pidsMax = 0;          // 0 = none
  std::string cpuset;           // optional cpuset.cpus
};

// A host directory mounted into an exec task's root (a group volume: emptyDir or hostPath).
struct VolumeBind {
  std::string hostPath;   // resolved and allowed by the caller; must be an existing directory
  std::string mountPath;  // absolute inside the task's root; not /, not under /proc /sys /dev, not
                          // on or under /local /secrets /tmp /alloc
  bool readOnly = false;
};

struct TaskLaunch {
  std::string id;                    // unique per task instance: "<allocUid>.<task>"; names the cgroup
  std::vector<std::string> argv;     // argv[0]: path inside the task's root (exec) or host (raw_exec)
  std::vector<std::string> env;      // "NAME=value"
  std::string workingDir;            // inside the task root; default "/local"
  std::string user = "nobody";       // name or numeric uid (exec); "" keeps the agent's (raw_exec)
  std::string taskDir;               // host path; holds local/, secrets/, tmp/ (created by the caller)
  std::string allocDir;              // host path of the group-shared alloc/ (mounted at /alloc)
  std::vector<std::string> rootBinds = {"/bin", "/etc", "/lib", "/lib64", "/sbin", "/usr"};
  // exec: a host directory (an unpacked rootfs tarball, see rootfs.h) whose top-level entries,
  // bound read-only, form the root instead of rootBinds. Entries named dev, proc, local, secrets,
  // tmp and alloc are the driver's own and are skipped.
  std::string rootfs;
  std::vector<VolumeBind> volumes;   // exec only; mounted after the task dirs, in order
  std::vector<std::string> devices;  // host device nodes given to the task (GPUs)
  std::vector<std::string> capabilities;  // kept capabilities, e.g. "CAP_NET_BIND_SERVICE"
  CgroupLimits limits;
  int stdoutFd = -1;                 // where the task writes; the driver dups, the caller closes
  int stderrFd = -1;
  // When set, the task's init writes stdout/stderr itself into size-rotated files in this host
  // directory (stdout.N, stderr.N; nodeagent/logs/rotator.h) and stdoutFd/stderrFd are ignored.
  std::string logDir;
  uint32_t logMaxFiles = 10;
  uint64_t logMaxFileSize = uint64_t{10} * 1024 * 1024;
};

struct TaskHandle {
  pid_t pid = -1;             // the task's init, in the host's PID namespace
  uint64_t startTicks = 0;    // /proc/<pid>/stat starttime: guards against PID reuse
  std::string cgroup;         // cgroup path relative to each hierarchy's root
  // start(): when the driver saw the task's execve succeed (for --trace-starts; not persisted).
  std::chrono::steady_clock::time_point execAt{};
};

struct TaskExit {
  int exitCode = 0;           // when exited normally
  int signal = 0;             // when killed by a signal
  bool oomKilled = false;     // the cgroup's OOM killer fired
  std::string message;
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string name() const = 0;
  // Starts the task; returns once the task's argv[0] has been exec'd (or why it could not be).
  [[nodiscard]] virtual kube::StatusOr<TaskHandle> start(const TaskLaunch& launch) = 0;
  // Whether the handle's process still runs (PID and start time both match).
  virtual bool alive(const TaskHandle& h) = 0;
  // Blocks up to timeoutMs for the task to end; nullopt while it still runs.
  virtual std::optional<TaskExit> wait(const TaskHandle& h, int timeoutMs) = 0;
  // Sends `signal` to the task (through its init), then SIGKILLs every process in its cgroup once
  // `killTimeoutMs` has passed; returns when nothing is left in the cgroup.
  [[nodiscard]] virtual kube::Status stop(const TaskHandle& h, int signal, int killTimeoutMs) = 0;
  // Removes the task's cgroup (after it ended).
  [[nodiscard]] virtual kube::Status destroy(const TaskHandle& h) = 0;
  // Re-attach after an agent restart: every task cgroup this driver created and that still has
  // processes, by TaskLaunch::id.
  virtual std::vector<std::pair<std::string, TaskHandle>> recover() = 0;
};
using DriverPtr = std::unique_ptr<Driver>;

// Marks the calling thread's stack MADV_DONTFORK, so that starting a task does not copy it: the
// agent runs a thread or two per task, and a clone() of a process with hundreds of thread stacks
// spends milliseconds duplicating their mappings. Call first thing in long-lived per-task threads.
// The driver re-includes the starting thread's own stack for the duration of its clone.
void excludeStackFromForks();

// --trace-starts: logs "trace: point=<what> at_us=<steady clock>" (a no-op unless enabled).
void enableStartTrace(bool on);
void traceStartPoint(const char* what);

}  // namespace nodeagent
