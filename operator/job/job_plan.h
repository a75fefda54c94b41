#pragma once
// The job controller's pure core: from a Job, its parsed spec, the Allocations observed for it and
// the workers' eligibility, compute what should change (a Plan) and the Job's next status. No I/O
// and no memory between calls: everything it decides is derived from its inputs, so an operator
// that crashes at any point and starts again makes the same decisions (level-triggered).
//
// Terms
//   slot      one instance of a group: an index ("0".."count-1") for service and batch jobs, a
//             worker name for system and sysbatch jobs. Allocations of a slot are its attempts.
//   live      an allocation that is neither terminal (Succeeded, Failed, Lost) nor asked to stop.
//   new/old   whether an allocation's template hash is the group's current one.
//   healthy   the allocation has been healthy (per healthCheck) for minHealthySeconds; the
//             operator records when it first saw it healthy in the annotation
//             foxden.io/healthy-since, so the judgement survives restarts.
//
// Rolling updates (service and system): a slot whose only live allocation is old is updated stop
// first, as Nomad does: the old one is asked to stop (spec.desiredState: stop) and, once that write
// succeeded, the new one is created (spec.previousAllocation names the old one); it need not wait
// for the old one to end, and the scheduler keeps counting a stopping allocation's resources on its
// worker until the agent reports it terminal. So a slot never has two allocations that want to run,
// whenever the operator dies. A slot is an update in flight from the stop until its new allocation
// is healthy; at most maxParallel are. A slot whose old allocation is stopped and that has nothing
// live (a crash between the two writes, or an unplaceable replacement) is one of them: the next
// plan creates its replacement without taking more budget. Drain migrations are stop first too.
// With canary N, the first N slots get a new allocation alongside the old one (the one exception:
// canaries run next to what they may replace) and the rollout pauses until promoted
// (spec.promoteVersion = version, or autoPromote once they are healthy).
// A rollout fails when a new allocation fails, misses healthyDeadlineSeconds, or nothing turns
// healthy within progressDeadlineSeconds; with autoRevert the Job's template goes back to the
// stable version (a new version with the stable template; allocations that already run that
// template are kept as they are).
//
// Thread safety: pure functions.

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kube/json.h"
#include "operator/controller.h"
#include "operator/job/job_spec.h"

namespace op {

// Annotations and labels the controller writes on Allocations.
inline constexpr const char* kLabelJob = "foxden.io/job";
inline constexpr const char* kLabelGroup = "foxden.io/group";
inline constexpr const char* kLabelWorker = "foxden.io/worker";
inline constexpr const char* kAnnSlot = "foxden.io/slot";
inline constexpr const char* kAnnAttempt = "foxden.io/attempt";
inline constexpr const char* kAnnHash = "foxden.io/template-hash";
inline constexpr const char* kAnnHealthySince = "foxden.io/healthy-since";
inline constexpr const char* kAnnFailedAt = "foxden.io/failed-at";
inline constexpr const char* kAnnReschedules = "foxden.io/reschedule-times";
inline constexpr const char* kAnnPriority = "foxden.io/priority";
inline constexpr const char* kFinalizer = "foxden.io/allocations";

// One Allocation as the planner sees it.
struct AllocView {
  kube::JsonPtr obj;
  std::string name;
  std::string uid;
  std::string group;
  std::string slot;
  std::string worker;
  int attempt = 0;
  int64_t version = 0;
  std::string hash;
  std::string phase;          // "" (not reported yet), Pending, Running, Succeeded, Failed, Lost
  bool stopRequested = false; // spec.desiredState == stop
  bool migrate = false;       // spec.migrate (drain)
  bool canary = false;
  bool healthyNow = false;    // per the group's healthCheck, right now
  std::optional<TimePoint> healthySince;
  std::optional<TimePoint> failedAt;  // status.finishedAt, else the foxden.io/failed-at annotation
  TimePoint created{};
  std::vector<int64_t> reschedules;   // unix seconds of the chain's reschedules

  bool terminal() const { return phase == "Succeeded" || phase == "Failed" || phase == "Lost"; }
  bool live() const { return !terminal() && !stopRequested; }
  // Failed or lost on its own (not because it was asked to stop).
  bool failed() const { return (phase == "Failed" || phase == "Lost") && !stopRequested; }
};

AllocView viewOf(const kube::JsonPtr& alloc, const JobSpec& spec);

// A placement the controller must make (via the scheduler) and write as a new Allocation.
struct PlaceRequest {
  std::string group;
  std::string slot;
  int index = 0;
  int attempt = 0;
  bool canary = false;
  std::string targetWorker;            // system/sysbatch: exactly this worker
  // The allocation of the slot this one replaces (update, migration, or the second half of one
  // after a crash). The plan stops it too (Plan::stop) unless it is already asked to stop, and the
  // controller creates this placement only once that stop is written: stop first, never two
  // allocations of a slot that want to run.
  std::string replaces;
  std::string previous;                // spec.previousAllocation: what it replaces or reschedules
  std::vector<std::string> penaltyWorkers;
  std::vector<int64_t> reschedules;    // chain carried to the new allocation
};

struct EventSpec {
  bool warning = false;
  std::string reason;
  std::string message;
};

struct Plan {
  std::vector<PlaceRequest> place;
  std::vector<std::string> stop;                       // set spec.desiredState: stop
  std::map<std::string, std::string> stopReasons;      // alloc -> why, for the Job's Events
  std::vector<std::string> remove;                     // delete (terminal, superseded)
  std::map<std::string, std::optional<std::string>> annotate;  // alloc -> healthy-since value / removal
  std::vector<std::string> markFailedAt;               // alloc -> annotate failed-at = now
  std::vector<std::string> uncanary;                   // promoted canaries: spec.canary false
  std::optional<kube::Json> specUpdate;                // new Job spec (revert, rollback)
  kube::Json status{rapidjson::kObjectType};           // the Job's next .status
  std::vector<EventSpec> events;
  std::optional<std::chrono::seconds> requeueAfter;    // level-triggered re-check (health timers, delays)
  bool deleteJob = false;                              // ttlSecondsAfterFinished passed
};

struct PlanInput {
  kube::JsonPtr job;
  const JobSpec* spec = nullptr;
  std::vector<AllocView> allocs;
  // system/sysbatch: per group, the workers an allocation may be placed on now (ready,
  // schedulable, feasible), and the workers that exist at all.
  std::map<std::string, std::set<std::string>> eligible;
  std::set<std::string> workers;
  TimePoint now{};
};

Plan planJob(const PlanInput& in);

// After placement: records per group how many could not be placed and why (the scheduler's
// message), in status.groups[].unplaced and the Progressing condition (reason Unschedulable).
void finishStatus(kube::Json& status, const std::map<std::string, std::pair<int, std::string>>& unplaced,
                  int64_t generation, TimePoint now);

// Sets a metav1.Condition in status.conditions, keeping lastTransitionTime when status is unchanged.
void setCondition(kube::Json& status, const std::string& type, bool value, const std::string& reason,
                  const std::string& message, int64_t generation, TimePoint now);
const kube::JsonValue* condition(const kube::JsonValue& status, const std::string& type);

// The status the controller writes for a Job it cannot act on (InvalidSpec).
kube::Json invalidStatus(const kube::JsonValue& job, const std::string& message, TimePoint now);

// Deterministic Allocation name for (job, group, slot, attempt); at most 253 characters.
std::string allocName(const std::string& job, const std::string& group, const std::string& slot, bool systemSlot,
                      int attempt);

}  // namespace op
