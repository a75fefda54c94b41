#pragma once
// The scheduler: where does an allocation go? Nomad's iterator stack over a snapshot of the
// cluster, with no I/O, so it is tested and benchmarked on its own.
//
//   feasibility  worker Ready and schedulable, driver available, constraints on labels and
//                attributes (In, NotIn, Exists, DoesNotExist, Gt, Lt, DistinctHosts), cpu/memory
//                free, GPU count and attributes (vendor, model, memory), static ports free
//   ranking      bin-pack by default (Nomad's score over cpu and memory), or spread; weighted
//                affinities; spread across a label's values with target percentages; a penalty
//                for workers the group's previous allocation failed on (reschedule preference)
//   preemption   when nothing fits, lower-priority allocations (priority difference >= 10, as
//                Nomad) may be evicted to make room; the placement names them
//
// The caller (the job controller) builds a ClusterState from its informer caches, asks for
// placements, and writes Allocations. Placements are recorded in the state as they are made, so
// one evaluation that places many allocations never over-commits a worker.
//
// Thread safety: none; one ClusterState and its Scheduler belong to one evaluation at a time.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace scheduler {

struct Gpu {
  std::string vendor;        // "nvidia" | "amd"
  int index = 0;
  std::string uuid;
  std::string model;
  int64_t memoryBytes = 0;
};

// One Worker, as its status and spec say.
struct WorkerInfo {
  std::string name;
  bool ready = false;                          // condition Ready == True
  bool schedulable = true;                     // !spec.unschedulable and no drain requested
  std::map<std::string, std::string> labels;   // metadata.labels
  std::vector<std::string> drivers;            // status.drivers: "exec", "raw_exec"
  int64_t cpuMilli = 0;                        // status.allocatable.cpu
  int64_t memoryBytes = 0;                     // status.allocatable.memory
  std::vector<Gpu> gpus;                       // status.gpus
  std::string workerClass;                     // for "why not" summaries; empty: derived from labels
};

struct PortAssignment {
  std::string name;
  int value = 0;
};

// An allocation that holds resources on a worker (not terminal; asked to stop or not).
struct AllocInfo {
  std::string uid;
  std::string worker;
  std::string jobKey;        // "namespace/name"
  std::string group;
  int priority = 50;
  int64_t cpuMilli = 0;
  int64_t memoryBytes = 0;
  std::vector<Gpu> gpus;     // the GPUs it holds (by vendor + index)
  std::vector<PortAssignment> ports;
  // Asked to stop, not terminal yet: its resources stay taken until it ends, and it is no
  // preemption victim (evicting it frees nothing sooner).
  bool stopping = false;
};

struct Requirement {
  std::string key;
  std::string op;            // In NotIn Exists DoesNotExist Gt Lt DistinctHosts
  std::vector<std::string> values;
};

struct Affinity {
  Requirement req;
  int weight = 50;           // -100..100
};

struct SpreadTarget {
  std::string value;
  int percent = 0;
};

struct Spread {
  std::string key;
  int weight = 50;
  std::vector<SpreadTarget> targets;  // empty: even
};

struct GpuRequest {
  int count = 0;
  std::string vendor;               // "nvidia" | "amd"; empty: any
  std::vector<std::string> models;  // any of these; empty: any
  int64_t minMemoryBytes = 0;
};

struct PortRequest {
  std::string name;
  int staticPort = 0;        // 0: dynamic
};

// What one allocation of a group needs.
struct PlacementRequest {
  std::string jobKey;        // "namespace/name"
  std::string group;
  int priority = 50;
  std::string driver = "exec";         // every task's driver must be available ("exec", "raw_exec")
  int64_t cpuMilli = 0;                // sum over the group's tasks' requests
  int64_t memoryBytes = 0;
  GpuRequest gpus;
  std::vector<PortRequest> ports;
  std::vector<Requirement> constraints;   // job's and group's, already merged
  bool distinctHostsJob = false;          // DistinctHosts at job level (any group of the job)
  std::vector<Affinity> affinities;
  std::vector<Spread> spreads;
  bool spreadAlgorithm = false;           // rank least-loaded first instead of bin-packing
  std::vector<std::string> penaltyWorkers;  // where the previous attempt failed: ranked last
  bool allowPreemption = true;
  // The group's desired count: the total that spread targets' percentages apply to, and the
  // denominator of the job anti-affinity penalty (as Nomad's tg.Count). 0: the allocations the
  // group already has, plus this one.
  int groupCount = 0;
};

struct Placement {
  std::string worker;
  std::vector<Gpu> gpus;                  // the GPUs chosen
  std::vector<PortAssignment> ports;      // one per requested port
  double score = 0;
  // uids of allocations to evict (empty without preemption); already removed from the state, so
  // the caller must delete them (or re-add them to the state if it gives up on this placement)
  std::vector<std::string> preempted;
};

// Why nothing fit: counts per reason, as kube-scheduler's FailedScheduling reports them.
struct PlacementFailure {
  int workersEvaluated = 0;
  std::map<std::string, int> reasons;     // "insufficient memory" -> 7, "missing nvidia.com/gpu" -> 5
  // "0/12 workers are available: 7 insufficient memory, 5 missing nvidia.com/gpu."
  std::string message() const;
};

using PlacementResult = std::variant<Placement, PlacementFailure>;

// A snapshot of the cluster that placements are recorded into.
class ClusterState {
 public:
  // Optional: room for this many workers and allocations, so that filling the state (and the
  // placements after) never stops to rehash its indexes.
  void reserve(size_t workers, size_t allocs);
  void upsertWorker(WorkerInfo w);
  void removeWorker(const std::string& name);
  void addAlloc(AllocInfo a);             // replaces one with the same uid
  void removeAlloc(const std::string& uid);
  const WorkerInfo* worker(const std::string& name) const;
  size_t workerCount() const;
  const AllocInfo* alloc(const std::string& uid) const;  // nullptr: not held
  size_t allocCount() const;
  // Implementation-defined indexes (free resources per worker, ports in use, allocations per
  // job/group per worker, per label value counts) live behind this.
  struct Impl;
  ClusterState();
  ~ClusterState();
  ClusterState(ClusterState&&) noexcept;  // the moved-from state may only be destroyed or assigned to
  ClusterState& operator=(ClusterState&&) noexcept;
  Impl& impl() { return *impl_; }
  const Impl& impl() const { return *impl_; }

 private:
  Impl* impl_;
};

struct SchedulerOptions {
  static constexpr int kNomadLimit = -1;
  // Nomad scores only a limited number of feasible workers (its "limit iterator"); 0 = score every
  // feasible worker. With a limit, a placement costs O(workers visited) rather than O(all workers).
  // kNomadLimit (the default): max(2, ceil(log2(workers))), and spreadScoreLimit for requests
  // with spreads or affinities, whose scores differ between workers beyond fit.
  int scoreLimit = kNomadLimit;
  int spreadScoreLimit = 256;             // with kNomadLimit; 0 = every feasible worker
  int dynamicPortMin = 20000;
  int dynamicPortMax = 32000;
  uint64_t seed = 1;                      // for the shuffled worker order, deterministic in tests
};

class Scheduler {
 public:
  Scheduler(ClusterState& state, SchedulerOptions options = {});
  // Places one allocation and records it in the state under `uid` (so the next call sees it).
  PlacementResult place(const PlacementRequest& req, const std::string& uid);
  // System and sysbatch jobs: places on exactly `worker` (GPUs and ports chosen there), or says why not.
  PlacementResult placeOn(const PlacementRequest& req, const std::string& uid, const std::string& worker);
  // Whether `worker` is feasible for the request, and why not ("insufficient memory", ...).
  std::optional<std::string> infeasibleReason(const PlacementRequest& req, const std::string& worker) const;

 private:
  // The shuffled visiting order (Nomad shuffles nodes once per evaluation) and where the last
  // placement stopped: the next one goes on from there, so one evaluation's placements look at
  // different workers. Rebuilt when the state's set of workers changes.
  void refreshOrder();

  ClusterState& state_;
  SchedulerOptions options_;
  uint64_t orderGeneration_ = 0;
  std::vector<uint32_t> order_;     // every known worker
  std::vector<uint32_t> gpuOrder_;  // the workers with GPUs, for GPU requests
  size_t cursor_ = 0;
  size_t gpuCursor_ = 0;
  uint64_t rng_ = 0;
};

}  // namespace scheduler
