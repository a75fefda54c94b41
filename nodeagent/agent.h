#pragma once
// The node agent: registers this machine as a Worker, heartbeats with a Lease, watches the
// Allocations bound to it and runs them (AllocRunner per allocation), writing their status through
// one StatusWriter. After a restart it re-attaches to the tasks it finds (state files, else the
// drivers' cgroup scan) and never starts a second copy of one.
//
// Threads: run()'s thread (registration, heartbeat, Worker status), the informer's, one sync
// thread draining the work queue, the status writer's, the runners' own, and the log endpoint's
// (one per connection).

#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>

#include "kube/informer.h"
#include "kube/rest_client.h"
#include "kube/workqueue.h"
#include "nodeagent/allocrunner/alloc_runner.h"
#include "nodeagent/allocrunner/dir_pool.h"
#include "nodeagent/gc.h"
#include "nodeagent/devices/gpu.h"
#include "nodeagent/driver/driver.h"
#include "nodeagent/logs/log_server.h"
#include "nodeagent/driver/rootfs.h"
#include "nodeagent/status_writer.h"

namespace nodeagent {

struct AgentOptions {
  std::string name;
  std::string dataDir;
  std::map<std::string, std::string> labels;
  bool enableRawExec = false;
  int leaseDurationSeconds = 40;
  int heartbeatMillis = 2000;
  int workerStatusSeconds = 30;
  std::string version = "0.1.0";
  // Log "watch-to-exec" latency per task start (for bench/agent_bench.sh).
  bool traceStarts = false;
  GpuDetectorOptions gpu;  // where to look for GPUs (tests point it at fake nodes and nvidia-smi)
  GcOptions gc;            // finished allocations' directories
  // The log endpoint (nodeagent/logs/log_server.h): HTTPS with a self-signed certificate kept in
  // DATA/pki, published with its fingerprint in Worker.status.agentEndpoint. Port 0 picks one.
  std::string listenHost = "0.0.0.0";
  uint16_t listenPort = 10250;
  // exec tasks' roots: host dirs bound read-only (empty: the driver's default list), where rootfs
  // tarballs may be read from (empty: <dataDir>/images), and the hostPath volume allow-list.
  std::vector<std::string> rootBinds;
  std::vector<std::string> rootfsDirs;
  std::vector<std::string> hostVolumes;
};

class Agent {
 public:
  Agent(AgentOptions options, kube::RestClientPtr client, DriverPtr exec, DriverPtr rawExec);
  ~Agent();
  // Runs until `stop` becomes true. Running tasks keep running when the agent stops.
  kube::Status run(const std::atomic<bool>& stop);

 private:
  kube::Status startLogServer();
  kube::Status registerWorker();
  std::map<std::string, std::string> workerLabels() const;
  kube::Status renewLease();
  kube::Status updateWorkerStatus();
  void syncLoop();
  void sync(const std::string& key);
  void reapOrphans();
  // Removes finished allocations' directories and records within GcOptions (see gc.h).
  void collectGarbage();

  const AgentOptions options_;
  kube::RestClientPtr client_;
  DriverPtr exec_;
  DriverPtr rawExec_;
  StatusWriter status_;
  AllocContext ctx_;
  std::unique_ptr<kube::Informer> informer_;
  kube::WorkQueue queue_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<AllocRunner>> runners_;  // by namespace/name, guarded by mu_
  std::map<std::string, std::chrono::steady_clock::time_point> firstSeen_;  // guarded by mu_
  std::set<std::string> stoppingUids_;  // runners taken out of runners_ and stopping, guarded by mu_
  GpuInventory gpus_;  // detected at start-up; constant afterwards
  std::unique_ptr<logs::TokenReviewer> reviewer_;
  std::unique_ptr<logs::LogServer> logServer_;
  std::string certSha256_;  // of the log endpoint's certificate; constant after start-up
  std::unique_ptr<RootfsCache> rootfs_;  // <dataDir>/rootfs, shared by every task runner
  std::unique_ptr<DirPool> dirPool_;     // <dataDir>/spare: allocation directories made ahead
};

}  // namespace nodeagent
