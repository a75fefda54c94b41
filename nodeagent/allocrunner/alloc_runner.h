#pragma once
// AllocRunner: runs one Allocation's tasks on this worker, in lifecycle order, and reports the
// allocation's status.
//
//   directories (alloc/, per task local/ secrets/ tmp/ logs/)
//   prestart tasks (run to completion; sidecars keep running)
//   main and poststart tasks            -- until every main task is done, or stop
//   stop sidecars, then poststop tasks (run to completion)
//
// Threads: one (the runner's), plus one per task (TaskRunner). update() and stop() may be called
// from the agent's sync thread. Status changes are pushed to the StatusWriter, which coalesces.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kube/json.h"
#include "nodeagent/driver/driver.h"
#include "nodeagent/taskrunner/task_runner.h"

namespace nodeagent {

class StatusWriter;

class DirPool;

struct AllocContext {
  std::string dataDir;
  DirPool* dirPool = nullptr;  // allocation directories made ahead (null: made at each start)
  Driver* execDriver = nullptr;
  Driver* rawExecDriver = nullptr;  // null unless the worker enables raw_exec
  StatusWriter* status = nullptr;
  // Task cgroups found at start-up by the drivers, by TaskLaunch id ("<allocUid>.<task>").
  std::map<std::string, TaskHandle> recovered;
  const GpuInventory* gpus = nullptr;  // this worker's GPUs (null: none detected)
  // Root binds, the rootfs cache and the host-volume allow-list; the allocation's own fields
  // (groupVolumes, volumeDir) are filled per allocation.
  TaskRootConfig root;
  // Called after each successful task start (the task has exec'd), with "namespace/name".
  std::function<void(const std::string& allocKey, std::chrono::steady_clock::time_point execAt)> onTaskStarted;
};

class AllocRunner {
 public:
  AllocRunner(kube::JsonPtr alloc, const AllocContext& ctx);
  ~AllocRunner();
  void start();
  // A newer version of the object: only desiredState (and deletion) matter once running.
  void update(kube::JsonPtr alloc);
  // Stops every task (kill signal, then SIGKILL after the kill timeout) and joins.
  void stop();
  // Ends the runner's threads and leaves the tasks running (agent shutdown).
  void detach();
  bool finished() const { return finished_; }
  const std::string& uid() const { return uid_; }

 private:
  void run();
  void report();
  std::unique_ptr<TaskRunner> makeRunner(const kube::Json& alloc, const kube::JsonValue& task,
                                         const std::string& jobType);
  // Task names and drivers (before anything is made for the allocation).
  kube::Status validateTasks(const kube::Json& alloc);
  kube::Status prepareDirs(const kube::Json& alloc);

  const AllocContext& ctx_;
  const std::string uid_;
  const std::string key_;  // namespace/name
  kube::JsonPtr alloc_;    // guarded by mu_ after start
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> detaching_{false};
  std::atomic<bool> finished_{false};
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<TaskRunner>> runners_;  // guarded by mu_
  std::string phase_ = "Pending";                      // guarded by mu_
  std::string message_;                                // guarded by mu_
  std::string startedAt_, finishedAt_;                 // guarded by mu_
};

}  // namespace nodeagent
