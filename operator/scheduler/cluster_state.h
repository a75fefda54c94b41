#pragma once
// ClusterState::Impl: the scheduler's indexes over workers and allocations, kept up to date on
// every upsert/add/remove so that checking one worker for one request costs O(1) lookups and never
// a scan of allocations.
//
//   workers_     slot per worker name (stable index; a removed worker's slot stays, unknown, while
//                allocations still point at it): allocatable, used cpu/memory, GPU use counts,
//                ports in use (sorted), interned labels (plus the attributes foxden.io/worker and
//                foxden.io/gpu-memory), driver bit mask, the allocations on it
//   allocs_      slot per allocation uid
//   jobs_        per job: allocations per worker; per group: allocations per worker and, for each
//                label key a spread asked about, allocations per label value (built on first use)
//   keys_/values_  interned label keys and values; values carry their number for Gt/Lt
//
// Not thread-safe (see scheduler.h).

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "operator/scheduler/scheduler.h"

namespace scheduler {

inline constexpr uint32_t kNoId = UINT32_MAX;

// The attributes constraints may name besides labels.
inline constexpr std::string_view kAttrWorker = "foxden.io/worker";
inline constexpr std::string_view kAttrDriver = "foxden.io/driver";
inline constexpr std::string_view kAttrGpuMemory = "foxden.io/gpu-memory";

// Strings to dense ids, so that per-candidate checks compare integers.
class Interner {
 public:
  uint32_t intern(const std::string& s);
  uint32_t find(const std::string& s) const;  // kNoId if never interned
  const std::string& name(uint32_t id) const { return names_[id]; }
  size_t size() const { return names_.size(); }

 private:
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::string> names_;
};

struct WorkerSlot {
  // Hot: what checking a candidate for a plain cpu/memory request reads, in one cache line.
  bool known = false;     // upserted and not removed
  bool eligible = false;  // ready && schedulable
  uint64_t driverMask = 0;
  int64_t cpuMilli = 0;   // allocatable, copied from info
  int64_t memoryBytes = 0;
  int64_t usedCpu = 0;
  int64_t usedMemory = 0;

  WorkerInfo info;
  std::vector<uint32_t> driverValues;                 // value ids of the drivers, for foxden.io/driver
  std::vector<std::pair<uint32_t, uint32_t>> labels;  // (key id, value id), sorted by key
  std::vector<uint8_t> gpuVendor;   // vendor id per GPU (index into info.gpus)
  std::vector<uint32_t> gpuModel;   // model id per GPU
  std::vector<uint16_t> gpuUse;     // allocations holding each GPU
  std::vector<int> ports;           // ports in use, sorted, duplicates kept
  std::vector<uint32_t> allocs;     // alloc slots on this worker
  std::vector<int> allocPriority;   // their priorities, side by side: preemption filters on these
                                    // without touching every allocation

  uint32_t label(uint32_t key) const;  // value id, kNoId if absent
};

struct AllocSlot {
  bool live = false;
  AllocInfo info;
  uint32_t worker = kNoId;
  uint32_t posInWorker = 0;
  std::vector<int> gpuSlots;  // indexes into the worker's info.gpus (-1: not on the worker)
};

struct GroupIndex {
  int total = 0;
  std::unordered_map<uint32_t, int> perWorker;
  // key id -> value id -> allocations of the group on workers with that value (kNoId: unlabelled).
  // A deque: rankers hold pointers to the maps while more keys are added.
  std::deque<std::pair<uint32_t, std::unordered_map<uint32_t, int>>> spreadCounts;
};

struct JobIndex {
  int total = 0;
  std::unordered_map<uint32_t, int> perWorker;
  std::unordered_map<std::string, GroupIndex> groups;
};

struct ClusterState::Impl {
  std::vector<WorkerSlot> workers;
  std::unordered_map<std::string, uint32_t> workerByName;
  size_t knownWorkers = 0;
  // Bumped whenever the set of known workers or their GPUs change: schedulers rebuild their order.
  uint64_t generation = 1;

  std::deque<AllocSlot> allocs;  // a deque: growing never moves every allocation (a latency spike)
  std::vector<uint32_t> freeAllocSlots;
  std::unordered_map<std::string, uint32_t> allocByUid;
  size_t liveAllocs = 0;

  std::unordered_map<std::string, JobIndex> jobs;

  Interner keys;
  Interner values;
  std::vector<__int128> valueNumber;  // per value id, in nano-units (kNotNumber if not a quantity)
  std::vector<bool> valueIsNumber;
  Interner drivers;                   // bit positions in driverMask (at most 64 drivers)
  Interner vendors;
  Interner models;
  uint32_t keyWorker, keyGpuMemory;

  Impl();
  void reserve(size_t workerCount, size_t allocCount);
  uint32_t internValue(const std::string& v);
  uint32_t slotFor(const std::string& worker);  // creates an unknown slot if needed
  void upsertWorker(WorkerInfo w);
  void removeWorker(const std::string& name);
  void addAlloc(AllocInfo a);
  void removeAlloc(const std::string& uid);

  const JobIndex* job(const std::string& key) const;
  const GroupIndex* group(const std::string& jobKey, const std::string& group) const;
  // The group's allocation counts per value of `key`, built from perWorker on first use.
  const std::unordered_map<uint32_t, int>& spreadCounts(const std::string& jobKey, const std::string& group,
                                                        uint32_t key);

 private:
  void account(uint32_t allocSlot, int sign);  // job/group/spread counts, used resources, GPUs, ports
  void resolveGpus(AllocSlot& a, const WorkerSlot& w) const;
};

}  // namespace scheduler
