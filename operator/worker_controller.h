#pragma once
// The worker lifecycle controller: Kubernetes' node lifecycle controller for Workers.
//
//   every monitorPeriod:
//     Lease foxden-system/<worker> renewTime changed since last look?  -> probe = now (our clock)
//     now - probe > gracePeriod                                          -> worker is dark:
//        Worker Ready -> Unknown (reason LeaseExpired)                      (always)
//        its unfinished Allocations -> status.phase Lost (WorkerLost)       (unless a storm)
//     Allocations naming a Worker that no longer exists                  -> Lost (WorkerGone)
//
// Eviction-storm guards, as Kubernetes has them:
//   * a worker's clock starts when we first see it: every worker gets a full grace period from
//     this operator's start (a renewTime older than our start, e.g. after the control plane was
//     down, is no evidence of anything);
//   * renewals are judged by when WE observed the renewTime change, never by comparing its value
//     with our clock (clock skew between machines is no evidence either);
//   * when more than stormFraction of workers are dark at once (and more than two, or all of
//     them: Kubernetes' PartialDisruption/FullDisruption), allocations are not marked Lost; the
//     workers still go Unknown and one Event says why evictions stopped.
//
// The agent (or hollow worker) sets Ready back to True when it renews again. Lost allocations
// stay Lost: the job controller has replaced them.
//
// Threads: monitorOnce() runs on the caller's thread (the operator runs it on a timer thread);
// it reads informer caches and writes through RestClient. Not reentrant.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/rest_client.h"
#include "kube/timeutil.h"
#include "operator/controller.h"

namespace op {

// The decision part, apart from the API: which workers are dark, and is it a storm.
// Pure and clock-injected, so unit tests drive it directly.
class WorkerHealth {
 public:
  WorkerHealth(std::chrono::milliseconds grace, double stormFraction)
      : grace_(grace), stormFraction_(stormFraction) {}

  // Records what the caches say now about `worker`: its Lease's renewTime ("" when there is no
  // Lease). A change of renewTime, or a worker seen for the first time, restarts its clock.
  void observe(const std::string& worker, const std::string& renewTime, kube::TimePoint now);
  // Workers no longer in the cache.
  void retain(const std::set<std::string>& workers);

  struct Verdict {
    std::vector<std::string> dark;   // grace period passed without a renewal
    int total = 0;
    bool storm = false;              // too many dark at once: mark NotReady only
  };
  Verdict evaluate(kube::TimePoint now) const;

 private:
  struct Probe {
    std::string renewTime;
    kube::TimePoint observedAt;
  };
  const std::chrono::milliseconds grace_;
  const double stormFraction_;
  std::map<std::string, Probe> probes_;
};

struct WorkerMonitorOptions {
  std::chrono::milliseconds gracePeriod{40000};   // --worker-grace-period (node-monitor-grace-period)
  std::chrono::milliseconds monitorPeriod{5000};  // --worker-monitor-period (node-monitor-period)
  double stormFraction = 0.55;                    // --unhealthy-fraction (unhealthy-zone-threshold)
  std::string leaseNamespace = "foxden-system";
};

class WorkerMonitor {
 public:
  // Informers: Workers (cluster), Leases (in leaseNamespace), Allocations (all namespaces). They
  // must be started by the caller; monitorOnce() does nothing until all three have synced.
  WorkerMonitor(kube::RestClientPtr client, kube::Informer& workers, kube::Informer& leases,
                   kube::Informer& allocations, kube::EventRecorder* events,
                   std::function<kube::TimePoint()> clock, WorkerMonitorOptions options);

  // One pass. Returns the number of API writes that failed (they are retried next pass).
  int monitorOnce();

  // Counters for /metrics (thread-safe).
  uint64_t workersMarkedUnknown() const { return markedUnknown_; }
  uint64_t allocationsMarkedLost() const { return markedLost_; }
  bool inStorm() const { return storm_; }

  const WorkerMonitorOptions& options() const { return options_; }

 private:
  kube::Status markUnknown(const kube::JsonPtr& worker);
  kube::Status markLost(const kube::JsonPtr& alloc, const std::string& reason, const std::string& message);

  const kube::RestClientPtr client_;
  kube::Informer& workers_;
  kube::Informer& leases_;
  kube::Informer& allocations_;
  kube::EventRecorder* const events_;
  const std::function<kube::TimePoint()> clock_;
  const WorkerMonitorOptions options_;

  WorkerHealth health_;
  std::set<std::string> goneCandidates_;  // allocations whose worker was missing last pass
  std::atomic<bool> storm_{false};
  std::atomic<uint64_t> markedUnknown_{0};
  std::atomic<uint64_t> markedLost_{0};
};

// The Controller: runs WorkerMonitor::monitorOnce() every monitorPeriod on its own thread, with
// the real clock (never the fake one tests give the periodic controller: grace periods are real).
class WorkerController : public Controller {
 public:
  explicit WorkerController(WorkerMonitorOptions options) : options_(std::move(options)) {}
  ~WorkerController() override { stop(); }
  std::string name() const override { return "worker"; }
  void start(const ControllerContext& ctx) override;
  void stop() override;

 private:
  void run();

  const WorkerMonitorOptions options_;
  std::unique_ptr<WorkerMonitor> monitor_;
  Counter* passes_ = nullptr;
  Counter* failures_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace op
