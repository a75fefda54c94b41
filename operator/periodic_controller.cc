#include "operator/periodic_controller.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>

#include "kube/json.h"

namespace op {

using kube::Json;
using kube::JsonPtr;
using kube::JsonValue;
using kube::Status;

namespace {

constexpr const char* kScheduledTime = "foxden.io/scheduled-time";
constexpr const char* kParentLabel = "foxden.io/periodic-parent";

bool conditionTrue(const JsonValue& o, const char* type) {
  if (const JsonValue* conds = kube::find(o, {"status", "conditions"}); conds && conds->IsArray()) {
    for (const auto& c : conds->GetArray()) {
      if (kube::getString(c, {"type"}) == type) return kube::getString(c, {"status"}) == "True";
    }
  }
  return false;
}

// The ownerReference of the Job that controls `job`, or nullptr.
const JsonValue* controllerRef(const JsonValue& job) {
  const JsonValue* md = kube::find(job, {"metadata"});
  if (md == nullptr) return nullptr;
  auto it = md->FindMember("ownerReferences");
  if (it == md->MemberEnd() || !it->value.IsArray()) return nullptr;
  for (const auto& r : it->value.GetArray()) {
    if (kube::getBool(r, {"controller"}) && kube::getString(r, {"kind"}) == "Job") return &r;
  }
  return nullptr;
}
std::string controllerUid(const JsonValue& job) {
  const JsonValue* r = controllerRef(job);
  return r != nullptr ? kube::getString(*r, {"uid"}) : "";
}
std::string controllerName(const JsonValue& job) {
  const JsonValue* r = controllerRef(job);
  return r != nullptr ? kube::getString(*r, {"name"}) : "";
}

Seconds toSeconds(kube::TimePoint t) { return std::chrono::time_point_cast<std::chrono::seconds>(t); }

void logLine(const std::string& m) { std::cerr << kube::nowTime() << " foxden-operator: " << m << std::endl; }

}  // namespace

std::function<kube::TimePoint()> fileClock(const std::string& path) {
  return [path] {
    std::ifstream in(path);
    std::string s;
    if (in >> s) {
      if (auto t = kube::parseTime(s)) return *t;
    }
    return kube::Clock::now();
  };
}

ScheduleWindow scheduleWindow(const CronSchedule& cron, const TimeZone& tz, Seconds earliest, Seconds now) {
  ScheduleWindow w;
  // After a long outage an every-minute schedule has many missed ticks; only the latest matters
  // and ticks older than a week are never launched, so start no earlier than that.
  earliest = std::max(earliest, now - std::chrono::hours(24 * 7));
  Seconds t = earliest;
  for (;;) {
    auto n = cron.next(t, tz);
    if (!n || *n > now) {
      w.next = n;
      break;
    }
    w.recent = *n;
    ++w.missed;
    t = *n;
  }
  return w;
}

PeriodicReconciler::PeriodicReconciler(kube::RestClientPtr client, kube::Informer& jobs, kube::EventRecorder* events,
                                       std::function<kube::TimePoint()> clock, PeriodicOptions options)
    : client_(std::move(client)), jobs_(jobs), events_(events), clock_(std::move(clock)), options_(std::move(options)) {}

std::string PeriodicReconciler::keyFor(const JsonValue& job) {
  if (kube::find(job, {"spec", "schedule"}) != nullptr) return kube::Informer::keyOf(job);
  std::string owner = controllerName(job);
  return owner.empty() ? "" : kube::ns(job) + "/" + owner;
}

kube::StatusOr<PeriodicResult> PeriodicReconciler::reconcile(const std::string& key) {
  JsonPtr parent = jobs_.get(key);
  if (!parent || kube::find(*parent, {"spec", "schedule"}) == nullptr) return PeriodicResult{};
  if (kube::find(*parent, {"metadata", "deletionTimestamp"}) != nullptr) return PeriodicResult{};
  const JsonValue& sched = *kube::find(*parent, {"spec", "schedule"});
  std::string ns = kube::ns(*parent);
  std::string name = kube::name(*parent);

  auto cron = CronSchedule::parse(kube::getString(sched, {"cron"}));
  auto tz = TimeZone::load(kube::getString(sched, {"timeZone"}, "UTC"));
  // An invalid schedule is the job controller's to report (InvalidSpec + one Event, from the same
  // validation); nothing to launch and nothing to requeue until the spec changes.
  if (!cron || !tz) return PeriodicResult{};
  std::string policy = kube::getString(sched, {"concurrencyPolicy"}, "Allow");
  std::optional<int64_t> deadline = kube::getInt(sched, {"startingDeadlineSeconds"});
  int64_t keepOk = kube::getInt(sched, {"successfulRunsHistoryLimit"}).value_or(3);
  int64_t keepFailed = kube::getInt(sched, {"failedRunsHistoryLimit"}).value_or(1);
  bool suspend = kube::getBool(*parent, {"spec", "suspend"});

  // Children, by the tick they were launched for.
  std::string uid = kube::uid(*parent);
  std::vector<JsonPtr> active, succeeded, failed;
  std::map<std::string, JsonPtr> byName;
  std::string lastSuccess;
  for (const JsonPtr& j : jobs_.list()) {
    if (kube::ns(*j) != ns || controllerUid(*j) != uid) continue;
    byName[kube::name(*j)] = j;
    if (conditionTrue(*j, "Complete")) {
      succeeded.push_back(j);
      std::string done = kube::getString(*j, {"status", "completionTime"});
      if (done.empty()) done = kube::getString(*j, {"metadata", "annotations", kScheduledTime});
      lastSuccess = std::max(lastSuccess, done);
    } else if (conditionTrue(*j, "Failed")) {
      failed.push_back(j);
    } else if (kube::find(*j, {"metadata", "deletionTimestamp"}) == nullptr) {
      active.push_back(j);
    }
  }

  kube::TimePoint nowTp = clock_();
  Seconds now = toSeconds(nowTp);
  std::string lastSchedule = kube::getString(*parent, {"status", "lastScheduleTime"});
  auto earliestTp = kube::parseTime(lastSchedule);
  if (!earliestTp) earliestTp = kube::parseTime(kube::getString(*parent, {"metadata", "creationTimestamp"}));
  Seconds earliest = earliestTp ? toSeconds(*earliestTp) : now;
  ScheduleWindow win = scheduleWindow(*cron, *tz, earliest, now);

  std::string newLastSchedule = lastSchedule;
  bool waitingForActive = false;
  if (win.recent && !suspend) {
    Seconds tick = *win.recent;
    std::string childName = name + "-" + std::to_string(tick.time_since_epoch().count());
    bool tooLate = deadline && tick + std::chrono::seconds(*deadline) < now;
    if (byName.count(childName) != 0) {
      newLastSchedule = kube::formatTime(tick);  // launched before a crash; the status write was lost
    } else if (tooLate) {
      if (events_ != nullptr) {
        events_->event(*parent, kube::EventType::kWarning, "MissedSchedule",
                       "missed the run scheduled for " + kube::formatTime(tick) + " by more than startingDeadlineSeconds (" +
                           std::to_string(*deadline) + "s)");
      }
      newLastSchedule = kube::formatTime(tick);
    } else if (policy == "Forbid" && !active.empty()) {
      waitingForActive = true;
      if (events_ != nullptr) {
        events_->event(*parent, kube::EventType::kNormal, "JobAlreadyActive",
                       "not starting the run scheduled for " + kube::formatTime(tick) + ": " +
                           kube::name(*active.front()) + " is still active (concurrencyPolicy Forbid)");
      }
    } else {
      if (policy == "Replace") {
        for (const JsonPtr& j : active) {
          kube::DeleteOptions d;
          d.propagationPolicy = "Background";
          d.preconditionUid = kube::uid(*j);
          auto r = client_->remove(kJobs.withNamespace(ns).withName(kube::name(*j)), d);
          if (!r && r.status().code() != 404) return r.status();
          if (events_ != nullptr) {
            events_->event(*parent, kube::EventType::kNormal, "SuccessfulDelete",
                           "Deleted job " + kube::name(*j) + " (concurrencyPolicy Replace)");
          }
        }
        active.clear();
      }
      Json child(rapidjson::kObjectType);
      auto& a = child.GetAllocator();
      kube::setString(child, "apiVersion", "foxden.io/v1alpha1", a);
      kube::setString(child, "kind", "Job", a);
      JsonValue& md = kube::ensureObject(child, "metadata", a);
      kube::setString(md, "name", childName, a);
      kube::setString(md, "namespace", ns, a);
      JsonValue& labels = kube::ensureObject(md, "labels", a);
      if (const JsonValue* pl = kube::find(*parent, {"metadata", "labels"}); pl && pl->IsObject()) {
        labels.CopyFrom(*pl, a);
      }
      if (name.size() <= 63) kube::setString(labels, kParentLabel, name, a);
      JsonValue& ann = kube::ensureObject(md, "annotations", a);
      kube::setString(ann, kScheduledTime, kube::formatTime(tick), a);
      JsonValue refs(rapidjson::kArrayType);
      JsonValue ref(rapidjson::kObjectType);
      kube::setString(ref, "apiVersion", "foxden.io/v1alpha1", a);
      kube::setString(ref, "kind", "Job", a);
      kube::setString(ref, "name", name, a);
      kube::setString(ref, "uid", uid, a);
      ref.AddMember("controller", true, a);
      ref.AddMember("blockOwnerDeletion", true, a);
      refs.PushBack(std::move(ref), a);
      md.AddMember("ownerReferences", std::move(refs), a);
      JsonValue spec(*kube::find(*parent, {"spec"}), a);
      kube::removeMember(spec, "schedule");
      kube::removeMember(spec, "suspend");
      child.AddMember("spec", std::move(spec), a);
      auto r = client_->create(kJobs.withNamespace(ns), child);
      if (!r && r.status().code() != 409) return r.status();
      if (r) {
        ++launched_;
        logLine("job=" + key + " launched " + childName + " for " + kube::formatTime(tick));
        if (events_ != nullptr) {
          events_->event(*parent, kube::EventType::kNormal, "SuccessfulCreate",
                         "Created job " + childName + " for the run scheduled at " + kube::formatTime(tick));
        }
      }
      newLastSchedule = kube::formatTime(tick);
    }
  }

  // History limits: the oldest finished runs beyond the limits go (their allocations with them).
  auto prune = [&](std::vector<JsonPtr>& runs, int64_t keep) -> Status {
    std::sort(runs.begin(), runs.end(), [](const JsonPtr& x, const JsonPtr& y) {
      return kube::getString(*x, {"metadata", "annotations", kScheduledTime}) <
             kube::getString(*y, {"metadata", "annotations", kScheduledTime});
    });
    for (size_t i = 0; static_cast<int64_t>(runs.size() - i) > keep; ++i) {
      kube::DeleteOptions d;
      d.propagationPolicy = "Background";
      auto r = client_->remove(kJobs.withNamespace(ns).withName(kube::name(*runs[i])), d);
      if (!r && r.status().code() != 404) return r.status();
    }
    return Status::ok();
  };
  if (Status st = prune(succeeded, keepOk); !st) return st;
  if (Status st = prune(failed, keepFailed); !st) return st;

  // Status last, fenced by the cached resourceVersion. Only the periodic fields: phase, counts
  // and conditions of the parent are the job controller's (it keeps fields it does not own).
  if (newLastSchedule != lastSchedule || lastSuccess != kube::getString(*parent, {"status", "lastSuccessfulTime"})) {
    Json o = kube::cloneJson(*parent);
    auto& a = o.GetAllocator();
    JsonValue& status = kube::ensureObject(o, "status", a);
    if (!newLastSchedule.empty()) kube::setString(status, "lastScheduleTime", newLastSchedule, a);
    if (!lastSuccess.empty()) kube::setString(status, "lastSuccessfulTime", lastSuccess, a);
    auto r = client_->updateStatus(kJobs.withNamespace(ns), o);
    if (!r) return r.status();
  }

  PeriodicResult res;
  if (!suspend) {
    std::chrono::milliseconds wait{3600 * 1000};
    if (win.next) {
      wait = std::chrono::duration_cast<std::chrono::milliseconds>(*win.next - nowTp) + std::chrono::milliseconds(100);
    }
    if (waitingForActive || options_.fakeClock) wait = std::min(wait, std::chrono::milliseconds(1000));
    res.requeueAfter = std::max(wait, std::chrono::milliseconds(100));
  }
  return res;
}

// ---- PeriodicController ----

void PeriodicController::start(const ControllerContext& ctx) {
  if (loop_) return;
  reconciler_ = std::make_unique<PeriodicReconciler>(ctx.client, *ctx.informers.jobs, ctx.events.get(),
                                                     options_.clock ? options_.clock : ctx.now, options_);
  loop_ = std::make_unique<ReconcileLoop>("periodic", [this](const std::string& key)
                                              -> kube::StatusOr<std::optional<std::chrono::milliseconds>> {
    auto r = reconciler_->reconcile(key);
    if (!r) return r.status();
    return r->requeueAfter;
  });
  kube::WorkQueue* q = &loop_->queue();
  auto onJob = [q](const JsonPtr& j) {
    std::string k = PeriodicReconciler::keyFor(*j);
    if (!k.empty()) q->add(k);
  };
  ctx.informers.jobs->addEventHandler({onJob, [onJob](const JsonPtr&, const JsonPtr& n) { onJob(n); }, onJob});
  PeriodicReconciler* rec = reconciler_.get();
  ctx.metrics->gauge("foxden_operator_periodic_launched_total", "Runs launched by periodic Jobs.", "",
                     [rec] { return static_cast<double>(rec->launched()); });
  loop_->start(ctx, 1);
}

void PeriodicController::stop() {
  if (loop_) loop_->stop();
}

}  // namespace op
