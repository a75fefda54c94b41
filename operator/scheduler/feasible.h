#pragma once
// Feasibility: can this worker take one allocation of this request? The request is compiled once
// (constraint keys and values interned, job/group indexes looked up, reason strings deferred), so
// checking a candidate costs integer compares and a few hash lookups, with no allocation.
//
// Checks run in one order and the first that fails names the worker's reason:
//   ready, schedulable, driver, constraints (in the request's order), distinct hosts,
//   cpu, memory, GPUs, static ports, dynamic ports.
// Adding a constraint operator touches Matcher only.

#include <cstdint>
#include <string>
#include <vector>

#include "operator/scheduler/cluster_state.h"

namespace scheduler {

// 0 = fits; small numbers are fixed reasons; kStaticPort + i and kConstraint + i name the
// request's i-th static port / constraint.
using ReasonCode = uint32_t;
inline constexpr ReasonCode kFits = 0;
inline constexpr ReasonCode kNotReady = 1;
inline constexpr ReasonCode kUnschedulable = 2;
inline constexpr ReasonCode kMissingDriver = 3;
inline constexpr ReasonCode kDistinctHosts = 4;
inline constexpr ReasonCode kInsufficientCpu = 5;
inline constexpr ReasonCode kInsufficientMemory = 6;
inline constexpr ReasonCode kMissingGpu = 7;
inline constexpr ReasonCode kGpuMismatch = 8;
inline constexpr ReasonCode kNoDynamicPort = 9;
inline constexpr ReasonCode kUnknownWorker = 10;
inline constexpr ReasonCode kStaticPort = 1000;
inline constexpr ReasonCode kConstraint = 2000;

// Reasons that evicting allocations could cure (preemption considers only these workers).
bool isResourceReason(ReasonCode r);

// One requirement on a worker's labels or attributes, with ids resolved against the state.
struct Matcher {
  enum class Op : uint8_t { kIn, kNotIn, kExists, kDoesNotExist, kGt, kLt, kNever };
  Op op = Op::kNever;
  uint32_t key = kNoId;           // kNoId: no worker has ever had this key
  bool driverAttr = false;        // foxden.io/driver: multi-valued, from status.drivers
  std::vector<uint32_t> values;   // In/NotIn: ids of values some worker has (others cannot match)
  __int128 number = 0;            // Gt/Lt, in nano-units
  bool numberOk = false;

  static Matcher compile(const ClusterState::Impl& s, const Requirement& r);
  bool matches(const ClusterState::Impl& s, const WorkerSlot& w) const;
};

// What a worker's resources look like: its own, or after hypothetical evictions (preemption).
struct Usage {
  int64_t cpu = 0;
  int64_t memory = 0;
  const std::vector<uint16_t>* gpuUse = nullptr;
  const std::vector<int>* ports = nullptr;  // sorted
  static Usage of(const WorkerSlot& w) { return {w.usedCpu, w.usedMemory, &w.gpuUse, &w.ports}; }
};

class Feasibility {
 public:
  Feasibility(const ClusterState::Impl& state, const PlacementRequest& req, int dynamicPortMin,
              int dynamicPortMax);

  ReasonCode check(uint32_t workerSlot) const;
  // Only cpu, memory, GPUs and ports, against `use`.
  ReasonCode checkResources(const WorkerSlot& w, const Usage& use) const;
  // The human wording of a reason, as PlacementFailure reports it.
  std::string describe(ReasonCode r) const;

  // Choices on the worker picked (feasibility guaranteed): GPU indexes into w.info.gpus, and
  // ports (dynamic ones drawn with `rng`).
  std::vector<int> chooseGpus(const WorkerSlot& w, const Usage& use) const;
  std::vector<PortAssignment> choosePorts(const Usage& use, uint64_t& rng) const;

  bool needsGpus() const { return gpuCount_ > 0; }
  const JobIndex* job() const { return job_; }
  const GroupIndex* group() const { return group_; }

 private:
  bool gpuUsable(const WorkerSlot& w, size_t i, bool withAttributes) const;

  const ClusterState::Impl& state_;
  const PlacementRequest& req_;
  uint64_t driverBit_ = 0;  // 0: no worker has the driver
  std::vector<Matcher> constraints_;
  std::vector<size_t> constraintIndex_;  // position in req.constraints, for describe()
  bool distinctGroup_ = false;
  const JobIndex* job_ = nullptr;
  const GroupIndex* group_ = nullptr;
  int gpuCount_ = 0;
  uint32_t gpuVendor_ = kNoId;  // kNoId with gpuVendorAny_ false: a vendor no worker has
  bool gpuVendorAny_ = true;
  std::vector<uint32_t> gpuModels_;
  bool gpuModelsAny_ = true;
  std::vector<int> staticPorts_;
  int dynamicPorts_ = 0;
  int staticInRange_ = 0;
  int portMin_ = 0;
  int portMax_ = 0;
};

}  // namespace scheduler
