#include "operator/scheduler/rank.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace scheduler {
namespace {

constexpr double kMaxFit = 18.0;  // Nomad's binPackingMaxFitScore

double fraction(int64_t used, int64_t capacity) {
  if (capacity <= 0) return 1.0;
  return std::clamp(static_cast<double>(used) / static_cast<double>(capacity), 0.0, 1.0);
}

}  // namespace

// 10^free summed over cpu and memory is 20 on an idle worker and 2 on a full one.
double binPackFit(double cpuUsed, double memoryUsed) {
  double total = std::pow(10.0, 1.0 - cpuUsed) + std::pow(10.0, 1.0 - memoryUsed);
  return std::clamp(20.0 - total, 0.0, kMaxFit);
}

double spreadFit(double cpuUsed, double memoryUsed) {
  double total = std::pow(10.0, 1.0 - cpuUsed) + std::pow(10.0, 1.0 - memoryUsed);
  return std::clamp(total - 2.0, 0.0, kMaxFit);
}

Ranking::Ranking(ClusterState::Impl& state, const PlacementRequest& req, const Feasibility& feasibility)
    : state_(state), req_(req), group_(feasibility.group()) {
  int placed = group_ == nullptr ? 0 : group_->total;
  desiredCount_ = req.groupCount > 0 ? req.groupCount : placed + 1;

  for (const auto& a : req.affinities) {
    if (a.weight == 0) continue;
    affinities_.emplace_back(Matcher::compile(state, a.req), a.weight);
    affinityWeightSum_ += std::abs(a.weight);
  }

  double spreadWeightSum = 0;
  for (const auto& s : req.spreads) spreadWeightSum += std::abs(s.weight);
  for (const auto& s : req.spreads) {
    if (s.weight == 0) continue;
    SpreadRule r;
    r.key = state.keys.find(s.key);
    r.weight = s.weight / spreadWeightSum;
    if (r.key != kNoId) r.counts = &state.spreadCounts(req.jobKey, req.group, r.key);
    r.even = s.targets.empty();
    if (r.even && r.counts != nullptr) {
      bool first = true;
      for (auto [value, n] : *r.counts) {
        if (value == kNoId) continue;
        r.minCount = first ? n : std::min(r.minCount, n);
        r.maxCount = first ? n : std::max(r.maxCount, n);
        first = false;
      }
    }
    int percentSum = 0;
    for (const auto& t : s.targets) {
      percentSum += t.percent;
      uint32_t v = state.values.find(t.value);
      if (v != kNoId) r.desired.emplace_back(v, t.percent / 100.0 * desiredCount_);
    }
    if (!r.even && percentSum < 100) r.implicitDesired = (100 - percentSum) / 100.0 * desiredCount_;
    spreads_.push_back(std::move(r));
  }
}

// Even spread: values with the fewest allocations gain, crowded ones lose, in [-1, 1].
// Targets (as Nomad): (desired - placed) / desired for the worker's value.
double Ranking::spreadBoost(const SpreadRule& s, const WorkerSlot& w) const {
  uint32_t v = s.key == kNoId ? kNoId : w.label(s.key);
  if (v == kNoId) return -1.0;  // a worker without the label cannot help the spread
  int used = 0;
  if (s.counts != nullptr) {
    auto it = s.counts->find(v);
    if (it != s.counts->end()) used = it->second;
  }
  if (s.even) {
    if (s.counts == nullptr || s.counts->empty()) return 0.0;
    if (used < s.minCount) return 1.0;  // a value nothing has landed on yet
    if (used == s.minCount) return s.maxCount > s.minCount ? double(s.maxCount - s.minCount) / s.maxCount : 0.0;
    return -double(used - s.minCount) / used;
  }
  double desired = s.implicitDesired;
  for (const auto& [value, d] : s.desired) {
    if (value == v) desired = d;
  }
  if (desired <= 0) return -1.0;
  return std::max(-1.0, (desired - used) / desired);
}

double Ranking::score(uint32_t slot) const {
  const WorkerSlot& w = state_.workers[slot];
  double cpu = fraction(w.usedCpu + req_.cpuMilli, w.cpuMilli);
  double memory = fraction(w.usedMemory + req_.memoryBytes, w.memoryBytes);
  double sum = (req_.spreadAlgorithm ? spreadFit(cpu, memory) : binPackFit(cpu, memory)) / kMaxFit;
  int components = 1;

  if (group_ != nullptr) {
    auto it = group_->perWorker.find(slot);
    if (it != group_->perWorker.end()) {
      // Nomad's job anti-affinity: -(collisions + 1) / count.
      sum += std::max(-1.0, -(it->second + 1) / desiredCount_);
      ++components;
    }
  }
  if (!affinities_.empty()) {
    double matched = 0;
    for (const auto& [m, weight] : affinities_) {
      if (m.matches(state_, w)) matched += weight;
    }
    sum += matched / affinityWeightSum_;
    ++components;
  }
  if (!spreads_.empty()) {
    double spread = 0;
    for (const auto& s : spreads_) spread += s.weight * spreadBoost(s, w);
    sum += spread;
    ++components;
  }
  return sum / components;
}

}  // namespace scheduler
