// The stack: built once per placement, in this order (README.md has the diagram).
//
//   shuffled workers (GPU workers only, for GPU requests), from where the last placement stopped
//     -> Feasibility::check            first failing check names the worker's reason
//     -> Ranking::score                mean of fit, anti-affinity, affinity, spread
//     -> limit                         stop after `limit` feasible workers were scored;
//                                      penalty workers are scored but never beat another
//     -> max score
//   nothing feasible: diagnose every worker (reason counts), then try preemption.

#include "operator/scheduler/scheduler.h"

#include <algorithm>
#include <bit>
#include <climits>
#include <utility>
#include <vector>

#include "operator/scheduler/cluster_state.h"
#include "operator/scheduler/feasible.h"
#include "operator/scheduler/preemption.h"
#include "operator/scheduler/rank.h"

namespace scheduler {
namespace {

uint64_t nextRandom(uint64_t& state) {  // splitmix64
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Records the allocation on `worker` (which fits) and says what it got.
Placement record(ClusterState::Impl& state, const Feasibility& f, const PlacementRequest& req,
                 const std::string& uid, uint32_t worker, double score, uint64_t& rng) {
  const WorkerSlot& w = state.workers[worker];
  Usage use = Usage::of(w);
  Placement p;
  p.worker = w.info.name;
  p.score = score;
  for (int g : f.chooseGpus(w, use)) p.gpus.push_back(w.info.gpus[static_cast<size_t>(g)]);
  p.ports = f.choosePorts(use, rng);

  AllocInfo a;
  a.uid = uid;
  a.worker = p.worker;
  a.jobKey = req.jobKey;
  a.group = req.group;
  a.priority = req.priority;
  a.cpuMilli = req.cpuMilli;
  a.memoryBytes = req.memoryBytes;
  a.gpus = p.gpus;
  a.ports = p.ports;
  state.addAlloc(std::move(a));
  return p;
}

// Evicts the victims from the state (the caller deletes their Allocations) and places there.
Placement preemptAndRecord(ClusterState::Impl& state, const PlacementRequest& req, const std::string& uid,
                           const Eviction& e, uint64_t& rng, int portMin, int portMax) {
  std::vector<std::string> uids;
  for (uint32_t a : e.allocs) uids.push_back(state.allocs[a].info.uid);
  for (const auto& u : uids) state.removeAlloc(u);
  Feasibility f(state, req, portMin, portMax);
  Ranking r(state, req, f);
  Placement p = record(state, f, req, uid, e.worker, r.score(e.worker), rng);
  p.preempted = std::move(uids);
  return p;
}

}  // namespace

std::string PlacementFailure::message() const {
  std::vector<std::pair<std::string, int>> sorted(reasons.begin(), reasons.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::string s = "0/" + std::to_string(workersEvaluated) + " workers are available";
  for (size_t i = 0; i < sorted.size(); ++i) {
    s += (i == 0 ? ": " : ", ") + std::to_string(sorted[i].second) + " " + sorted[i].first;
  }
  return s + ".";
}

Scheduler::Scheduler(ClusterState& state, SchedulerOptions options)
    : state_(state), options_(options), rng_(options.seed) {}

void Scheduler::refreshOrder() {
  const ClusterState::Impl& s = state_.impl();
  if (orderGeneration_ == s.generation) return;
  orderGeneration_ = s.generation;
  order_.clear();
  gpuOrder_.clear();
  for (uint32_t i = 0; i < s.workers.size(); ++i) {
    if (s.workers[i].known) order_.push_back(i);
  }
  for (size_t i = order_.size(); i > 1; --i) {
    std::swap(order_[i - 1], order_[nextRandom(rng_) % i]);
  }
  for (uint32_t i : order_) {
    if (!s.workers[i].info.gpus.empty()) gpuOrder_.push_back(i);
  }
  cursor_ = 0;
  gpuCursor_ = 0;
}

PlacementResult Scheduler::place(const PlacementRequest& req, const std::string& uid) {
  refreshOrder();
  ClusterState::Impl& s = state_.impl();
  Feasibility feasibility(s, req, options_.dynamicPortMin, options_.dynamicPortMax);
  Ranking ranking(s, req, feasibility);

  size_t limit = SIZE_MAX;
  if (options_.scoreLimit > 0) {
    limit = static_cast<size_t>(options_.scoreLimit);
  } else if (options_.scoreLimit == SchedulerOptions::kNomadLimit) {
    if (ranking.weighsLabels()) {
      if (options_.spreadScoreLimit > 0) limit = static_cast<size_t>(options_.spreadScoreLimit);
    } else {
      size_t n = s.knownWorkers;
      limit = std::max<size_t>(2, n <= 1 ? 0 : static_cast<size_t>(std::bit_width(n - 1)));
    }
  }
  std::vector<uint32_t> penalised;
  for (const auto& name : req.penaltyWorkers) {
    auto it = s.workerByName.find(name);
    if (it != s.workerByName.end()) penalised.push_back(it->second);
  }

  // Only GPU workers can take a GPU request: visiting the others would be wasted work.
  const std::vector<uint32_t>& order = feasibility.needsGpus() ? gpuOrder_ : order_;
  size_t& cursor = feasibility.needsGpus() ? gpuCursor_ : cursor_;
  const size_t n = order.size();
  uint32_t best = kNoId, bestPenalised = kNoId;
  double bestScore = 0, bestPenalisedScore = 0;
  size_t scored = 0, visited = 0;
  while (visited < n && scored < limit) {
    uint32_t slot = order[(cursor + visited) % n];
    ++visited;
    if (feasibility.check(slot) != kFits) continue;
    double score = ranking.score(slot);
    if (std::find(penalised.begin(), penalised.end(), slot) != penalised.end()) {
      if (bestPenalised == kNoId || score > bestPenalisedScore) bestPenalised = slot, bestPenalisedScore = score;
      continue;  // scored, but not counted against the limit: it only places when nothing else does
    }
    ++scored;
    if (best == kNoId || score > bestScore) best = slot, bestScore = score;
  }
  if (n > 0) cursor = (cursor + visited) % n;
  int portMin = options_.dynamicPortMin, portMax = options_.dynamicPortMax;
  if (best != kNoId) return record(s, feasibility, req, uid, best, bestScore, rng_);
  if (bestPenalised != kNoId) return record(s, feasibility, req, uid, bestPenalised, bestPenalisedScore, rng_);

  // Nothing fits: every worker's reason, and the workers eviction could help.
  PlacementFailure failure;
  failure.workersEvaluated = static_cast<int>(s.knownWorkers);
  std::vector<ReasonCode> codes;  // distinct, to describe each once
  std::vector<int> counts;
  std::vector<uint32_t> resourceBound;
  for (uint32_t slot = 0; slot < s.workers.size(); ++slot) {  // in memory order: this visits all
    if (!s.workers[slot].known) continue;
    ReasonCode r = feasibility.check(slot);
    auto it = std::find(codes.begin(), codes.end(), r);
    if (it == codes.end()) {
      codes.push_back(r);
      counts.push_back(1);
    } else {
      ++counts[static_cast<size_t>(it - codes.begin())];
    }
    if (isResourceReason(r)) resourceBound.push_back(slot);
  }
  for (size_t i = 0; i < codes.size(); ++i) failure.reasons[feasibility.describe(codes[i])] += counts[i];
  if (req.allowPreemption && !resourceBound.empty()) {
    if (auto e = findEviction(s, req, feasibility, resourceBound)) {
      return preemptAndRecord(s, req, uid, *e, rng_, portMin, portMax);
    }
  }
  return failure;
}

PlacementResult Scheduler::placeOn(const PlacementRequest& req, const std::string& uid, const std::string& worker) {
  ClusterState::Impl& s = state_.impl();
  Feasibility feasibility(s, req, options_.dynamicPortMin, options_.dynamicPortMax);
  PlacementFailure failure;
  failure.workersEvaluated = 1;
  auto it = s.workerByName.find(worker);
  if (it == s.workerByName.end()) {
    failure.reasons[feasibility.describe(kUnknownWorker)] = 1;
    return failure;
  }
  uint32_t slot = it->second;
  ReasonCode r = feasibility.check(slot);
  if (r == kFits) {
    Ranking ranking(s, req, feasibility);
    return record(s, feasibility, req, uid, slot, ranking.score(slot), rng_);
  }
  if (req.allowPreemption && isResourceReason(r)) {
    if (auto e = findEviction(s, req, feasibility, {slot})) {
      return preemptAndRecord(s, req, uid, *e, rng_, options_.dynamicPortMin, options_.dynamicPortMax);
    }
  }
  failure.reasons[feasibility.describe(r)] = 1;
  return failure;
}

std::optional<std::string> Scheduler::infeasibleReason(const PlacementRequest& req, const std::string& worker) const {
  const ClusterState::Impl& s = state_.impl();
  Feasibility feasibility(s, req, options_.dynamicPortMin, options_.dynamicPortMax);
  auto it = s.workerByName.find(worker);
  ReasonCode r = it == s.workerByName.end() ? kUnknownWorker : feasibility.check(it->second);
  if (r == kFits) return std::nullopt;
  return feasibility.describe(r);
}

}  // namespace scheduler
