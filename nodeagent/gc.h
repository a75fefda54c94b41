#pragma once
// Garbage collection of finished allocations on a worker: their directories (task dirs, logs),
// agent state and driver records. Tasks' cgroups are removed when each task ends; what is
// collected here is what a user may still want to look at for a while (logs), so it is kept
// within limits, as Nomad's client GC does:
//
//   * an allocation deleted from the API: collected at once (its logs cannot be reached any more);
//   * a terminal one still in the API: kept for `retention`, and only the newest `maxAllocs`;
//   * anything still running or stopping: never.

#include <cstdint>
#include <string>
#include <vector>

namespace nodeagent {

struct GcOptions {
  int maxAllocs = 50;            // terminal allocation directories kept (Nomad's gc_max_allocs)
  int64_t retentionSeconds = 3600;
  int intervalSeconds = 30;
};

struct AllocDirInfo {
  std::string uid;
  bool active = false;           // a runner is running or stopping it
  bool inApi = false;            // the Allocation object still exists
  int64_t finishedAt = 0;        // epoch seconds the directory last changed
};

// Which allocation directories to collect, oldest first. Pure: tested on its own.
std::vector<std::string> gcPlan(std::vector<AllocDirInfo> dirs, const GcOptions& options, int64_t now);

}  // namespace nodeagent
