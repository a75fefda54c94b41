#pragma once
// Preemption: when no worker fits, which lower-priority allocations could make room?
//
// As Nomad: only allocations whose priority is at least 10 below the request's may be evicted.
// On each worker that failed for resources (cpu, memory, GPUs, ports) only, victims are taken
// lowest priority first (larger ones first within a priority, so fewer are needed) until the
// request fits; then each victim that turns out unnecessary is given back, highest priority first.
// The worker needing the fewest evictions wins, then the lowest highest-priority evicted, then the
// lowest priority sum. Cost: O(allocations on the candidate workers × log), only when nothing fits.

#include <cstdint>
#include <optional>
#include <vector>

#include "operator/scheduler/cluster_state.h"
#include "operator/scheduler/feasible.h"

namespace scheduler {

inline constexpr int kPreemptionPriorityGap = 10;

struct Eviction {
  uint32_t worker = kNoId;
  std::vector<uint32_t> allocs;  // alloc slots to evict
};

std::optional<Eviction> findEviction(const ClusterState::Impl& state, const PlacementRequest& req,
                                     const Feasibility& feasibility, const std::vector<uint32_t>& workers);

}  // namespace scheduler
