#pragma once
// JobController: Jobs -> Allocations, shaped like a controller-runtime reconciler.
//
//   Job / Allocation / Worker informers ──handlers──► WorkQueue (key "namespace/name" of a Job)
//                                                          │ N worker threads
//                                                          ▼
//   reconcile(key): read the caches ─► planJob (pure, job_plan.h) ─► write: annotations, stops,
//                   deletions, placements (scheduler on a ClusterState built from the caches plus
//                   the allocations this process created that the cache has not shown yet; one
//                   that replaces an allocation only once that one's stop is written), status
//                   last, only when changed. Errors requeue with backoff; timers (health, reschedule
//                   delays, deadlines) requeue after their due time.
//
// Deletion: the finalizer foxden.io/allocations holds a deleted Job until every Allocation was
// told to stop, reported a terminal phase (or was Lost, or its worker is gone), and was deleted.
//
// Threads: `workers` reconcile threads; handlers run on the informers' threads and only enqueue.
// Placement is serialised by placementMu_ so that two reconciles never over-commit a worker.

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kube/workqueue.h"
#include "operator/controller.h"
#include "operator/job/job_plan.h"
#include "operator/job/job_spec.h"
#include "operator/scheduler/scheduler.h"

namespace op {

struct JobControllerOptions {
  int workers = 4;
  scheduler::SchedulerOptions scheduler;
};

// Reads a Worker / an Allocation into the scheduler's terms.
scheduler::WorkerInfo workerInfoOf(const kube::JsonValue& worker);
std::optional<scheduler::AllocInfo> allocInfoOf(const kube::JsonValue& alloc);  // nullopt: holds nothing
WorkerOffer workerOfferOf(const kube::JsonValue& worker);

// The Allocation object for a placement of `req` (group `groupJson` of `job`).
kube::Json buildAllocation(const kube::JsonValue& job, const JobSpec& spec, const GroupSpec& group,
                           const kube::JsonValue& groupJson, const PlaceRequest& req,
                           const scheduler::Placement& placement, int64_t version);

class JobController : public Controller {
 public:
  explicit JobController(JobControllerOptions options) : options_(std::move(options)) {}
  ~JobController() override { stop(); }
  std::string name() const override { return "job"; }
  void start(const ControllerContext& ctx) override;
  void stop() override;

  struct Result {
    std::optional<std::chrono::milliseconds> requeueAfter;
    bool backoff = false;  // requeue with the rate limiter (unplaceable, conflicts)
  };
  // One reconcile of the Job `key`; public for tests.
  [[nodiscard]] kube::StatusOr<Result> reconcile(const std::string& key);

 private:
  void worker();
  void enqueueAllJobs();
  void noteWorker(const kube::JsonValue& worker, bool present);
  std::vector<WorkerOffer> workerOffers();
  std::vector<kube::JsonPtr> allocsOf(const std::string& ns, const std::string& job) const;
  kube::StatusOr<Result> finalize(const kube::JsonPtr& job, const std::vector<kube::JsonPtr>& allocs);
  kube::Status updateAlloc(const kube::JsonPtr& alloc, const std::function<void(kube::Json&)>& edit);
  void event(const kube::JsonValue& job, const EventSpec& e);
  void log(const std::string& msg) const;

  const JobControllerOptions options_;
  ControllerContext ctx_;
  std::unique_ptr<kube::WorkQueue> queue_;
  std::vector<std::thread> threads_;
  std::atomic<bool> started_{false};

  // Allocation keys per Job key, maintained by the allocation handlers.
  mutable std::mutex indexMu_;
  std::map<std::string, std::set<std::string>> allocIndex_;  // guarded by indexMu_

  // The scheduler's view of the cluster, kept current by the worker and allocation handlers and by
  // this controller's own placements (kube-scheduler's cache with "assumed" pods): a placement is
  // recorded when it is decided, the informer's copy replaces it when it arrives, a failed create
  // removes it. No reconcile rebuilds it, so a placement costs the scheduler's time, not O(cluster).
  std::mutex placementMu_;
  scheduler::ClusterState state_;                    // guarded by placementMu_
  std::unique_ptr<scheduler::Scheduler> scheduler_;  // guarded by placementMu_; works on state_

  // What each worker offers (drivers, GPUs), for the spec check; kept by the worker handlers.
  std::mutex offersMu_;
  std::map<std::string, WorkerOffer> offers_;                // guarded by offersMu_
  std::optional<std::vector<WorkerOffer>> uniqueOffers_;     // guarded by offersMu_; reset on change

  Counter* reconciles_ = nullptr;
  Counter* errors_ = nullptr;
  Counter* placements_ = nullptr;
  Counter* placementFailures_ = nullptr;
  Histogram* placementLatency_ = nullptr;
};

}  // namespace op
