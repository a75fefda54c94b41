#include "operator/scheduler/preemption.h"

#include <algorithm>
#include <tuple>

namespace scheduler {
namespace {

// A worker's usage with some allocations taken away.
struct Remaining {
  int64_t cpu = 0;
  int64_t memory = 0;
  std::vector<uint16_t> gpuUse;
  std::vector<int> ports;

  Remaining(const ClusterState::Impl& s, const WorkerSlot& w, const std::vector<uint32_t>& evicted)
      : cpu(w.usedCpu), memory(w.usedMemory), gpuUse(w.gpuUse), ports(w.ports) {
    for (uint32_t a : evicted) {
      const AllocSlot& slot = s.allocs[a];
      cpu -= slot.info.cpuMilli;
      memory -= slot.info.memoryBytes;
      for (int g : slot.gpuSlots) {
        if (g >= 0 && gpuUse[static_cast<size_t>(g)] > 0) --gpuUse[static_cast<size_t>(g)];
      }
      for (const auto& p : slot.info.ports) {
        auto it = std::lower_bound(ports.begin(), ports.end(), p.value);
        if (it != ports.end() && *it == p.value) ports.erase(it);
      }
    }
  }
  Usage view() const { return {cpu, memory, &gpuUse, &ports}; }
};

bool fitsWithout(const ClusterState::Impl& s, const Feasibility& f, const WorkerSlot& w,
                 const std::vector<uint32_t>& evicted) {
  Remaining r(s, w, evicted);
  return f.checkResources(w, r.view()) == kFits;
}

}  // namespace

std::optional<Eviction> findEviction(const ClusterState::Impl& state, const PlacementRequest& req,
                                     const Feasibility& feasibility, const std::vector<uint32_t>& workers) {
  std::optional<Eviction> best;
  std::tuple<size_t, int, int> bestCost;
  for (uint32_t wid : workers) {
    const WorkerSlot& w = state.workers[wid];
    std::vector<uint32_t> victims;
    for (size_t i = 0; i < w.allocs.size(); ++i) {
      if (w.allocPriority[i] <= req.priority - kPreemptionPriorityGap && !state.allocs[w.allocs[i]].info.stopping) {
        victims.push_back(w.allocs[i]);
      }
    }
    if (victims.empty()) continue;
    auto share = [&](uint32_t a) {
      const AllocInfo& i = state.allocs[a].info;
      double cpu = w.info.cpuMilli > 0 ? double(i.cpuMilli) / double(w.info.cpuMilli) : 0;
      double mem = w.info.memoryBytes > 0 ? double(i.memoryBytes) / double(w.info.memoryBytes) : 0;
      return cpu + mem + double(i.gpus.size() + i.ports.size());
    };
    std::sort(victims.begin(), victims.end(), [&](uint32_t a, uint32_t b) {
      int pa = state.allocs[a].info.priority, pb = state.allocs[b].info.priority;
      if (pa != pb) return pa < pb;
      double sa = share(a), sb = share(b);
      if (sa != sb) return sa > sb;
      return state.allocs[a].info.uid < state.allocs[b].info.uid;
    });

    std::vector<uint32_t> chosen;
    bool fits = false;
    for (uint32_t a : victims) {
      chosen.push_back(a);
      if (fitsWithout(state, feasibility, w, chosen)) {
        fits = true;
        break;
      }
    }
    if (!fits) continue;
    // Give back victims that are not needed, the most valuable first.
    for (size_t i = chosen.size(); i-- > 0;) {
      std::vector<uint32_t> without = chosen;
      without.erase(without.begin() + static_cast<std::ptrdiff_t>(i));
      if (fitsWithout(state, feasibility, w, without)) chosen = std::move(without);
    }

    int maxPriority = 0, sumPriority = 0;
    for (uint32_t a : chosen) {
      maxPriority = std::max(maxPriority, state.allocs[a].info.priority);
      sumPriority += state.allocs[a].info.priority;
    }
    std::tuple<size_t, int, int> cost{chosen.size(), maxPriority, sumPriority};
    if (!best || cost < bestCost) {
      best = Eviction{wid, std::move(chosen)};
      bestCost = cost;
    }
  }
  return best;
}

}  // namespace scheduler
