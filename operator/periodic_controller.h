#pragma once
// The periodic controller: Kubernetes' CronJob controller for Jobs with spec.schedule.
//
//   reconcile(parent):
//     cron or time zone invalid     -> nothing (the job controller reports InvalidSpec); no requeue
//     children = Jobs owned by it (ownerReferences, controller) named <parent>-<unix time>
//     the most recent tick in (lastScheduleTime or creation, now]:
//        missed by more than startingDeadlineSeconds -> skipped (Event MissedSchedule)
//        suspend                                      -> nothing launched
//        Forbid and a child still active              -> wait (the tick is launched late if the
//                                                        active run ends within the deadline)
//        Replace                                      -> delete the active children first
//        launch: create <parent>-<unix seconds of the tick>, the parent's spec without schedule,
//                owner reference to the parent; status.lastScheduleTime = the tick
//     finished children beyond successfulRunsHistoryLimit / failedRunsHistoryLimit -> deleted
//     requeue at the next tick
//
// The child's name is a function of the tick, so a crash between create and status write cannot
// launch a tick twice: the second create is AlreadyExists. The parent gets no allocations (the job
// controller skips Jobs with a schedule). A child is finished when its Complete or Failed
// condition is True.
//
// Time comes from an injectable clock: the operator's --fake-clock-file makes tests fire a
// schedule without waiting. With a fake clock we requeue at most every second of real time.
//
// Threads: reconcile() for one key at a time (the work queue's promise); reads the Jobs informer
// cache, writes through RestClient.

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kube/event_recorder.h"
#include "kube/informer.h"
#include "kube/rest_client.h"
#include "kube/timeutil.h"
#include "operator/controller.h"
#include "operator/cron.h"
#include "operator/reconcile_loop.h"

namespace op {

// A clock reading an RFC 3339 time from `path` on every call (for tests); the real clock when the
// file is missing or unreadable. Thread-safe.
std::function<kube::TimePoint()> fileClock(const std::string& path);

// The tick to act on now: the latest scheduled instant in (earliest, now], how many ticks were in
// that window (capped), and the next one after now. Pure.
struct ScheduleWindow {
  std::optional<Seconds> recent;
  std::optional<Seconds> next;
  int missed = 0;
};
ScheduleWindow scheduleWindow(const CronSchedule& cron, const TimeZone& tz, Seconds earliest, Seconds now);

struct PeriodicResult {
  std::optional<std::chrono::milliseconds> requeueAfter;
};

struct PeriodicOptions {
  // The periodic controller's own clock when set (the operator's --fake-clock-file): requeues
  // then come at least every second of real time, as the fake clock may jump. Only this
  // controller reads it; grace periods and health gates elsewhere keep real time.
  std::function<kube::TimePoint()> clock;
  bool fakeClock = false;
};

class PeriodicReconciler {
 public:
  PeriodicReconciler(kube::RestClientPtr client, kube::Informer& jobs, kube::EventRecorder* events,
                     std::function<kube::TimePoint()> clock, PeriodicOptions options = {});

  [[nodiscard]] kube::StatusOr<PeriodicResult> reconcile(const std::string& key);

  // For event handlers: the parent key ("ns/name") a Job event should enqueue: itself when it has a
  // schedule, its controlling owner when that is a Job (a child finished), else "".
  static std::string keyFor(const kube::JsonValue& job);

  uint64_t launched() const { return launched_; }

 private:
  const kube::RestClientPtr client_;
  kube::Informer& jobs_;
  kube::EventRecorder* const events_;
  const std::function<kube::TimePoint()> clock_;
  const PeriodicOptions options_;
  std::atomic<uint64_t> launched_{0};
};

// The Controller: a PeriodicReconciler behind a ReconcileLoop keyed by the parent Job. Its clock
// is options.clock if set (the operator's --fake-clock-file in tests), else the context's.
class PeriodicController : public Controller {
 public:
  explicit PeriodicController(PeriodicOptions options = {}) : options_(options) {}
  ~PeriodicController() override { stop(); }
  std::string name() const override { return "periodic"; }
  void start(const ControllerContext& ctx) override;
  void stop() override;

 private:
  const PeriodicOptions options_;
  std::unique_ptr<PeriodicReconciler> reconciler_;
  std::unique_ptr<ReconcileLoop> loop_;
};

}  // namespace op
