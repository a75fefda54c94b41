#pragma once
// JobSpec: a Job's spec read into typed values, with the semantic checks the schema cannot make
// (InvalidSpec), and the template hash that defines a job version.
//
// Versions: the "template" of a Job is spec.groups with each group's count and completions
// removed, plus the job-level constraints, affinities and spread. A change to it is a new job
// version (rolled out); a change of count alone is a scale, not a version (as Kubernetes treats
// replicas). The hash is over canonical JSON (object keys sorted), so key order never matters.
//
// Thread safety: plain values and free functions.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kube/json.h"
#include "operator/scheduler/scheduler.h"

namespace op {

struct UpdateStrategy {
  int maxParallel = 1;               // 0: all at once, no health gating
  std::string healthCheck = "checks";  // checks | task_states | manual
  int minHealthySeconds = 10;
  int healthyDeadlineSeconds = 300;
  int progressDeadlineSeconds = 600;  // 0: none
  bool autoRevert = false;
  int canary = 0;
  bool autoPromote = false;
};

struct ReschedulePolicy {
  int attempts = 0;
  int intervalSeconds = 0;
  int delaySeconds = 30;
  std::string delayFunction = "exponential";  // constant | exponential | fibonacci
  int maxDelaySeconds = 3600;
  bool unlimited = true;

  // Delay before reschedule number `n` (0-based) of a chain.
  int64_t delayFor(size_t n) const;
};

struct GroupSpec {
  std::string name;
  int count = 1;
  int completions = 1;  // batch: successful allocations wanted
  UpdateStrategy update;
  ReschedulePolicy reschedule;
  scheduler::PlacementRequest request;  // resources, constraints, ports... for one allocation
  std::string hash;                     // template hash of this group (job-level parts included)
};

struct JobSpec {
  std::string type = "service";  // service | batch | system | sysbatch
  int priority = 50;
  bool suspend = false;
  bool periodic = false;         // spec.schedule set: runs are child Jobs (periodic controller)
  int backoffLimit = 6;
  std::optional<int64_t> activeDeadlineSeconds;
  std::optional<int64_t> ttlSecondsAfterFinished;
  int revisionHistoryLimit = 10;
  std::optional<int64_t> promoteVersion;
  std::optional<int64_t> rollbackTo;
  std::vector<GroupSpec> groups;
  std::string templateHash;      // of the whole template

  bool isSystem() const { return type == "system" || type == "sysbatch"; }
  bool isBatch() const { return type == "batch" || type == "sysbatch"; }
  const GroupSpec* group(const std::string& n) const;
};

// What the spec check needs to know about the workers (for "no worker offers this").
struct WorkerOffer {
  std::vector<std::string> drivers;
  int nvidiaGpus = 0;
  int amdGpus = 0;
};

// Reads and checks a Job. An error (Invalid, message naming the field) means InvalidSpec. `workers`
// may be empty (nothing is then judged impossible for want of workers).
[[nodiscard]] kube::StatusOr<JobSpec> parseJobSpec(const kube::JsonValue& job,
                                                   const std::vector<WorkerOffer>& workers = {});

// The template of a Job's spec (see above), as a new document.
kube::Json templateOf(const kube::JsonValue& spec);
// Canonical JSON: object keys sorted at every level.
std::string canonicalJson(const kube::JsonValue& v);
// 16 hex digits of FNV-1a 64 over `s`.
std::string hashHex(std::string_view s);

// Checks a standard 5-field cron expression (or @hourly ... @yearly, @every is not accepted) and
// an IANA time zone name; the message says what is wrong.
[[nodiscard]] kube::Status validateCron(std::string_view cron);
[[nodiscard]] kube::Status validateTimeZone(std::string_view tz);

}  // namespace op
