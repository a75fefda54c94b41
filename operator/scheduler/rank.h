#pragma once
// Ranking: how good is a feasible worker for this request? Each scorer yields a component in
// [-1, 1] and the worker's score is their mean (Nomad's ScoreNormalizationIterator):
//
//   fit            always; bin-pack (Nomad's ScoreFitBinPack) or spread (ScoreFitSpread), /18
//   anti-affinity  when the worker already holds allocations of the same job and group
//   affinity       when the request has affinities
//   spread         when the request has spreads
//
// Built once per placement: spread counts per label value are looked up (and their minimum and
// maximum computed) here, not per candidate. README.md gives the formulas.

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

#include "operator/scheduler/cluster_state.h"
#include "operator/scheduler/feasible.h"

namespace scheduler {

// Nomad's fit scores over the cpu and memory a worker would use with the request, in [0, 18].
double binPackFit(double cpuUsedFraction, double memoryUsedFraction);
double spreadFit(double cpuUsedFraction, double memoryUsedFraction);

class Ranking {
 public:
  Ranking(ClusterState::Impl& state, const PlacementRequest& req, const Feasibility& feasibility);

  double score(uint32_t workerSlot) const;
  bool weighsLabels() const { return !affinities_.empty() || !spreads_.empty(); }

 private:
  struct SpreadRule {
    uint32_t key = kNoId;
    double weight = 0;  // this spread's share of all spreads' weight
    const std::unordered_map<uint32_t, int>* counts = nullptr;
    bool even = true;
    int minCount = 0;   // even: over the values that have allocations
    int maxCount = 0;
    std::vector<std::pair<uint32_t, double>> desired;  // targets: value id -> desired allocations
    double implicitDesired = -1;  // values not named share what the targets leave (< 0: none)
  };
  double spreadBoost(const SpreadRule& s, const WorkerSlot& w) const;

  const ClusterState::Impl& state_;
  const PlacementRequest& req_;
  const GroupIndex* group_;
  double desiredCount_ = 1;  // the group's count, for anti-affinity and targets
  std::vector<std::pair<Matcher, double>> affinities_;
  double affinityWeightSum_ = 0;
  std::vector<SpreadRule> spreads_;
};

}  // namespace scheduler
