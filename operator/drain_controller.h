#pragma once
// The drain controller: moves allocations off a Worker whose spec.drain is set, a budget at a
// time, like Nomad's drainer (migrate max_parallel) and `kubectl drain`.
//
//   reconcile(worker):
//     no spec.drain                    -> clear status.drain (a cancelled drain); done
//     status.drain.startedAt unset     -> set it now; Event DrainStarted
//     past startedAt + deadlineSeconds -> desiredState: stop on every allocation still there;
//                                         Event DrainDeadlineReached
//     else                             -> spec.migrate: true on the next allocations (by name) while
//                                         fewer than maxParallel are in flight
//     status.drain {remaining, complete}; Event DrainComplete once nothing is left
//
// A migration is in flight from spec.migrate until the old allocation is terminal (or deleted) AND
// its replacement (the Allocation whose spec.previousAllocation names it) is Running and healthy; a
// service allocation asked to stop with no replacement yet is in flight (its replacement is created
// right after the stop: stop first). The
// job controller stops the old one and then places the replacement; this controller only chooses
// which and how many. Drain implies unschedulable (the scheduler skips a worker with spec.drain).
//
// Threads: reconcile() is called by the operator's workers for one worker key at a time (the work
// queue guarantees it); it reads informer caches and writes through RestClient.

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/rest_client.h"
#include "kube/timeutil.h"
#include "operator/controller.h"
#include "operator/reconcile_loop.h"

namespace op {

// What to do now, from the caches alone: pure, for unit tests.
struct DrainPlan {
  std::vector<kube::JsonPtr> migrate;  // set spec.migrate on these
  std::vector<kube::JsonPtr> stop;     // deadline passed: set desiredState stop
  int inFlight = 0;                    // migrations not finished (before `migrate` is applied)
  int remaining = 0;                   // allocations still on the worker (not terminal)
  bool complete = false;
};

struct DrainSpec {
  int maxParallel = 1;
  int64_t deadlineSeconds = 3600;
  bool ignoreSystemJobs = false;
};

// `onWorker`: the worker's allocations. `replacementOf(old)`: the allocation whose
// spec.previousAllocation names `old`, or nullptr.
// `movedAway`: migrations whose old allocation is no longer in the cache (the job controller
// deletes terminal allocations) while their replacement is not yet Running and healthy.
DrainPlan planDrain(const DrainSpec& spec, const std::vector<kube::JsonPtr>& onWorker,
                    const std::function<kube::JsonPtr(const kube::JsonValue& old)>& replacementOf,
                    bool deadlinePassed, int movedAway = 0);

struct DrainResult {
  std::optional<std::chrono::milliseconds> requeueAfter;
};

struct DrainOptions {
  // While a drain runs, look again at least this often (allocation events also enqueue the worker).
  std::chrono::milliseconds resync{2000};
};

class DrainReconciler {
 public:
  DrainReconciler(kube::RestClientPtr client, kube::Informer& workers, kube::Informer& allocations,
                  kube::EventRecorder* events, std::function<kube::TimePoint()> clock,
                  DrainOptions options = {});

  [[nodiscard]] kube::StatusOr<DrainResult> reconcile(const std::string& workerName);

  // Worker keys to enqueue for an Allocation event: its worker, and the worker of the allocation
  // it replaces (whose migration it may complete).
  std::vector<std::string> workersFor(const kube::JsonValue& alloc) const;

 private:
  const kube::RestClientPtr client_;
  kube::Informer& workers_;
  kube::Informer& allocations_;
  kube::EventRecorder* const events_;
  const std::function<kube::TimePoint()> clock_;
  const DrainOptions options_;

  // Allocations seen (or set) with spec.migrate on each worker: once the job controller deletes a
  // terminal old allocation, this is how its migration is still counted until the replacement is
  // healthy. Lost on restart, like any cache (a restart may then start the next ones early).
  std::mutex mu_;
  std::map<std::string, std::set<std::string>> migrating_;  // worker -> "ns/name"; guarded by mu_
};

// The Controller: a DrainReconciler behind a ReconcileLoop keyed by worker name. Worker events
// enqueue workers with a drain (or a stale drain status); Allocation events enqueue the draining
// worker they are on or moved from.
class DrainController : public Controller {
 public:
  explicit DrainController(DrainOptions options = {}) : options_(options) {}
  ~DrainController() override { stop(); }
  std::string name() const override { return "drain"; }
  void start(const ControllerContext& ctx) override;
  void stop() override;

 private:
  const DrainOptions options_;
  std::unique_ptr<DrainReconciler> reconciler_;
  std::unique_ptr<ReconcileLoop> loop_;
};

}  // namespace op
