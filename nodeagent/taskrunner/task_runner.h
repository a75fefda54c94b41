#pragma once
// TaskRunner: keeps one task of an allocation running as its spec and restart policy say.
//
//   prestart hooks (task dirs, env, logs)  ->  driver.start  ->  wait  ->  exit
//        ^                                                                   |
//        +------ restart policy: attempts within interval, delay, mode ------+
//
// Re-attach: the runner persists {pid, start ticks, restarts} in the agent's state directory
// before and after every start. A new runner first adopts what runs (by its state file, else by
// the driver's recovery of the task's cgroup), never starting a second copy; a task that ended
// while the agent was away is treated as an exit (its status is in the task's exit file).
//
// Threads: one thread per runner (start() .. stop()). The state it reports is read through
// snapshot() from any thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kube/json.h"
#include "nodeagent/devices/gpu.h"
#include "nodeagent/driver/driver.h"
#include "nodeagent/probes/probe.h"
#include "nodeagent/taskrunner/task_root.h"

namespace nodeagent {

struct RestartPolicy {
  int attempts = 2;
  int intervalSeconds = 300;
  int delaySeconds = 5;
  bool modeDelay = false;  // Fail (default) | Delay
};

// What the runner reports; becomes one entry of Allocation.status.tasks.
struct TaskState {
  std::string name;
  std::string state = "Waiting";  // Waiting | Running | Terminated
  int pid = 0;
  int restarts = 0;
  int exitCode = 0;
  int signal = 0;
  std::string reason;   // Completed | Error | OOMKilled | StartError | Killed
  std::string message;
  std::string startedAt, finishedAt;
  bool ready = false;
  bool failed = false;  // terminal failure: the allocation fails
  bool done = false;    // terminal: will not run again
};

struct TaskConfig {
  std::string allocUid, allocName, allocNamespace, jobName, groupName, jobType;
  int index = 0;
  kube::JsonPtr task;              // the task's spec object (immutable snapshot)
  std::map<std::string, int> ports;
  std::string taskDir, allocDir, logDir, stateFile;
  RestartPolicy restart;
  int previousRestarts = 0;        // from the API's status: counters never go down
  std::optional<TaskHandle> recovered;  // found by the driver's cgroup scan (state file lost)
  // After each successful start (the task has exec'd and its state is persisted); execAt is when
  // the driver saw the execve succeed.
  std::function<void(std::chrono::steady_clock::time_point execAt)> onStarted;
  // The allocation's assigned GPUs (vendor, index), given to tasks that ask for a GPU resource.
  std::vector<std::pair<std::string, int>> gpus;
  const GpuInventory* inventory = nullptr;
  TaskRootConfig root;  // root binds or rootfs tarball, and group volumes (task_root.h)
  kube::JsonPtr alloc;  // the Allocation, for env valueFrom.fieldRef (immutable snapshot)
};

class TaskRunner {
 public:
  TaskRunner(TaskConfig config, Driver& driver, std::function<void()> onChange);
  ~TaskRunner();
  void start();
  // Asks the task to stop (killSignal, then SIGKILL after killTimeout); does not wait.
  void requestStop();
  // requestStop() and joins the thread. Call from one thread only.
  void stop();
  // Leaves the task running and ends the runner's thread (agent shutdown: a restarted agent
  // re-attaches). Does not wait; join with stop()'s join via detachAndJoin().
  void requestDetach();
  void detachAndJoin();
  TaskState snapshot() const;
  const std::string& name() const { return name_; }

 private:
  void run();
  bool adopt(TaskHandle& h);
  kube::StatusOr<TaskLaunch> buildLaunch();
  void persist(const TaskHandle& h);
  void setState(const std::function<void(TaskState&)>& f);
  bool sleepFor(std::chrono::milliseconds d);  // false when stopping

  const TaskConfig config_;
  const std::string name_;
  Driver& driver_;
  const std::function<void()> onChange_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> detaching_{false};
  // Probes of the current run: startup gates readiness and liveness; a liveness failure stops
  // the task, which the restart policy then counts.
  std::optional<ProbeSpec> readinessSpec_, livenessSpec_, startupSpec_;
  std::unique_ptr<ProbeRunner> readiness_, liveness_, startup_;
  std::atomic<bool> unhealthy_{false};
  std::atomic<bool> started_{false};  // startup probe passed (or none)
  bool probesPending_ = false;            // startup probe running; main probes not yet
  std::function<void()> startMainProbes_;
  void startProbes(pid_t initPid);
  void stopProbes();
  mutable std::mutex mu_;
  std::condition_variable cv_;
  TaskState state_;                                  // guarded by mu_
  std::vector<std::chrono::system_clock::time_point> failures_;  // restart accounting window
};

// Parses "SIGTERM", "TERM" or "15"; -1 when unknown.
int parseSignal(const std::string& s);

}  // namespace nodeagent
