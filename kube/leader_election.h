#pragma once
// Leader election on a coordination.k8s.io/v1 Lease, with client-go's leaderelection semantics:
//  - a candidate takes the lease when it is free (empty holder), already ours, or expired;
//    "expired" is judged like client-go, on the local clock: the lease record has not changed for
//    leaseDurationSeconds since we first observed it (renewTime + leaseDuration < now, measured
//    without trusting the other node's clock);
//  - every write is an update carrying the resourceVersion we read (or a create when the lease
//    does not exist), so two candidates can never both win: the loser gets 409 and retries;
//  - the leader renews every retryPeriod; if it cannot renew within renewDeadline it stops leading;
//  - spec.acquireTime / renewTime are MicroTime; leaseTransitions counts holder changes;
//  - with releaseOnCancel, stop() by the leader clears holderIdentity so others need not wait.
// Like client-go's Run(), an elector leads at most once: after losing the lease it ends (the
// owner typically exits or builds a new elector).
//
// Threads: one elector thread (start() .. stop()). All callbacks run on it, so they must not block:
// onStartedLeading should start the leader's work elsewhere, onStoppedLeading should stop it.
// isLeader()/leader() are thread-safe.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "kube/json.h"
#include "kube/rest_client.h"

namespace kube {

struct LeaderElectionConfig {
  std::string leaseNamespace;
  std::string leaseName;
  std::string identity;
  std::chrono::milliseconds leaseDuration{15000};
  std::chrono::milliseconds renewDeadline{10000};
  std::chrono::milliseconds retryPeriod{2000};
  bool releaseOnCancel = true;
  std::function<void()> onStartedLeading;
  std::function<void()> onStoppedLeading;               // called once if we led
  std::function<void(const std::string&)> onNewLeader;  // observed holder changed ("" = none)
};

class LeaderElector {
 public:
  // Validates like client-go: leaseDuration > renewDeadline > 1.2 * retryPeriod > 0, names set.
  [[nodiscard]] static StatusOr<std::unique_ptr<LeaderElector>> create(RestClientPtr client,
                                                                       LeaderElectionConfig config);
  ~LeaderElector();  // stop()s
  LeaderElector(const LeaderElector&) = delete;
  LeaderElector& operator=(const LeaderElector&) = delete;

  void start();
  // Stops campaigning or leading; releases the lease if configured; joins the thread.
  void stop();

  bool isLeader() const;
  std::string leader() const;  // the last observed holder identity
  // True once the elector thread has ended (stopped, or lost the lease after leading).
  bool finished() const;

 private:
  LeaderElector(RestClientPtr client, LeaderElectionConfig config);

  struct Record {
    std::string holder;
    int64_t leaseDurationSeconds = 0;
    std::string acquireTime;
    std::string renewTime;
    int64_t leaseTransitions = 0;
    bool operator==(const Record&) const = default;
  };

  void run();
  bool tryAcquireOrRenew();
  void release();
  void maybeReportTransition();
  // Waits `d` unless stopping; returns false when stopping.
  bool sleep(std::chrono::milliseconds d);
  bool stopping() const;
  Json leaseObject(const Record& r) const;
  static Record recordOf(const JsonValue& lease);

  const RestClientPtr client_;
  const LeaderElectionConfig config_;
  const ResourceRef leaseRef_;

  // Owned by the elector thread:
  Json lastLease_;  // as last read or written (carries the resourceVersion for updates)
  bool haveLease_ = false;
  Record observed_;
  std::chrono::steady_clock::time_point observedTime_;
  std::string reportedLeader_;
  bool reportedOnce_ = false;

  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  bool stopping_ = false;
  bool started_ = false;
  bool leading_ = false;
  bool finished_ = false;
  std::string leader_;
  std::thread thread_;
};

}  // namespace kube
