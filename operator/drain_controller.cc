#include "operator/drain_controller.h"

#include <algorithm>
#include <iostream>
#include <map>

#include "kube/json.h"

namespace op {

using kube::Json;
using kube::JsonPtr;
using kube::JsonValue;

namespace {


bool terminal(const JsonValue& a) {
  std::string p = kube::getString(a, {"status", "phase"});
  return p == "Succeeded" || p == "Failed" || p == "Lost";
}

bool conditionTrue(const JsonValue& o, const char* type) {
  if (const JsonValue* conds = kube::find(o, {"status", "conditions"}); conds && conds->IsArray()) {
    for (const auto& c : conds->GetArray()) {
      if (kube::getString(c, {"type"}) == type) return kube::getString(c, {"status"}) == "True";
    }
  }
  return false;
}

// Running, and healthy as rolling updates judge it (Healthy; Ready where no Healthy is reported).
bool runningHealthy(const JsonValue& a) {
  if (kube::getString(a, {"status", "phase"}) != "Running") return false;
  const JsonValue* conds = kube::find(a, {"status", "conditions"});
  bool hasHealthy = false;
  if (conds != nullptr && conds->IsArray()) {
    for (const auto& c : conds->GetArray()) hasHealthy |= kube::getString(c, {"type"}) == "Healthy";
  }
  return conditionTrue(a, hasHealthy ? "Healthy" : "Ready");
}

void logLine(const std::string& m) { std::cerr << kube::nowTime() << " foxden-operator: " << m << std::endl; }

}  // namespace

DrainPlan planDrain(const DrainSpec& spec, const std::vector<JsonPtr>& onWorker,
                    const std::function<JsonPtr(const JsonValue& old)>& replacementOf, bool deadlinePassed,
                    int movedAway) {
  DrainPlan plan;
  plan.inFlight = movedAway;
  std::vector<JsonPtr> sorted = onWorker;
  std::sort(sorted.begin(), sorted.end(), [](const JsonPtr& a, const JsonPtr& b) {
    return kube::Informer::keyOf(*a) < kube::Informer::keyOf(*b);
  });
  std::vector<JsonPtr> candidates;
  for (const JsonPtr& a : sorted) {
    bool ignored = spec.ignoreSystemJobs && kube::getString(*a, {"spec", "jobType"}) == "system";
    bool migrating = kube::getBool(*a, {"spec", "migrate"});
    bool done = terminal(*a);
    if (migrating) {
      JsonPtr repl = replacementOf(*a);
      // The job controller stops a service allocation first and creates its replacement after:
      // one stopped without a replacement yet has its replacement still to come (system jobs get
      // none: their allocation leaves with the worker).
      bool replacementDue = !repl && kube::getString(*a, {"spec", "desiredState"}, "run") == "stop" &&
                            kube::getString(*a, {"spec", "jobType"}, "service") == "service";
      bool finished = done && !replacementDue && (!repl || runningHealthy(*repl) || terminal(*repl));
      // (No replacement for a terminal old one: a batch allocation that completed, or a job
      // deleted meanwhile; a replacement that ended itself is the job controller's business.)
      if (!finished) ++plan.inFlight;
    }
    if (done || ignored) continue;
    ++plan.remaining;
    if (kube::getString(*a, {"spec", "desiredState"}, "run") != "run") continue;  // being stopped
    if (deadlinePassed) {
      plan.stop.push_back(a);
    } else if (!migrating) {
      candidates.push_back(a);
    }
  }
  if (!deadlinePassed) {
    int budget = std::max(0, spec.maxParallel - plan.inFlight);
    for (size_t i = 0; i < candidates.size() && static_cast<int>(i) < budget; ++i) plan.migrate.push_back(candidates[i]);
  }
  plan.complete = plan.remaining == 0 && plan.inFlight == 0;
  return plan;
}

DrainReconciler::DrainReconciler(kube::RestClientPtr client, kube::Informer& workers, kube::Informer& allocations,
                                 kube::EventRecorder* events, std::function<kube::TimePoint()> clock,
                                 DrainOptions options)
    : client_(std::move(client)),
      workers_(workers),
      allocations_(allocations),
      events_(events),
      clock_(std::move(clock)),
      options_(options) {}

std::vector<std::string> DrainReconciler::workersFor(const JsonValue& alloc) const {
  std::vector<std::string> out;
  std::string w = kube::getString(alloc, {"spec", "workerName"});
  if (!w.empty()) out.push_back(w);
  std::string prev = kube::getString(alloc, {"spec", "previousAllocation"});
  if (!prev.empty()) {
    if (JsonPtr old = allocations_.get(kube::ns(alloc) + "/" + prev)) {
      std::string ow = kube::getString(*old, {"spec", "workerName"});
      if (!ow.empty() && ow != w) out.push_back(ow);
    }
  }
  return out;
}

kube::StatusOr<DrainResult> DrainReconciler::reconcile(const std::string& workerName) {
  JsonPtr worker = workers_.get(workerName);
  if (!worker) return DrainResult{};
  const JsonValue* drain = kube::find(*worker, {"spec", "drain"});
  const JsonValue* status = kube::find(*worker, {"status", "drain"});
  if (drain == nullptr || !drain->IsObject()) {
    {
      std::lock_guard l(mu_);
      migrating_.erase(workerName);
    }
    if (status != nullptr) {  // cancelled: forget the progress report
      auto r = client_->patchStatus(kWorkers.withName(workerName), kube::PatchType::kMerge, R"({"status":{"drain":null}})");
      if (!r && r.status().code() != 404) return r.status();
      if (events_ != nullptr) events_->event(*worker, kube::EventType::kNormal, "DrainCancelled", "drain request removed");
    }
    return DrainResult{};
  }
  DrainSpec spec;
  spec.maxParallel = static_cast<int>(std::max<int64_t>(1, kube::getInt(*drain, {"maxParallel"}).value_or(1)));
  spec.deadlineSeconds = kube::getInt(*drain, {"deadlineSeconds"}).value_or(3600);
  spec.ignoreSystemJobs = kube::getBool(*drain, {"ignoreSystemJobs"});

  kube::TimePoint now = clock_();
  std::string startedAt = status != nullptr ? kube::getString(*status, {"startedAt"}) : "";
  auto started = kube::parseTime(startedAt);
  bool fresh = !started.has_value();
  if (fresh) started = now;

  std::vector<JsonPtr> onWorker;
  std::map<std::string, JsonPtr> replacements;  // "ns/previousAllocation" -> replacement
  for (const JsonPtr& a : allocations_.list()) {
    if (kube::getString(*a, {"spec", "workerName"}) == workerName) onWorker.push_back(a);
    std::string prev = kube::getString(*a, {"spec", "previousAllocation"});
    if (!prev.empty()) replacements[kube::ns(*a) + "/" + prev] = a;
  }
  auto replacementOf = [&](const JsonValue& old) -> JsonPtr {
    auto it = replacements.find(kube::Informer::keyOf(old));
    return it == replacements.end() ? nullptr : it->second;
  };
  bool deadlinePassed = now >= *started + std::chrono::seconds(spec.deadlineSeconds);
  int movedAway = 0;
  {
    std::lock_guard l(mu_);
    std::set<std::string>& known = migrating_[workerName];
    std::set<std::string> present;
    for (const JsonPtr& a : onWorker) {
      present.insert(kube::Informer::keyOf(*a));
      if (kube::getBool(*a, {"spec", "migrate"})) known.insert(kube::Informer::keyOf(*a));
    }
    for (auto it = known.begin(); it != known.end();) {
      if (present.count(*it) != 0) {
        ++it;
        continue;
      }
      auto r = replacements.find(*it);
      bool pending = r != replacements.end() && !runningHealthy(*r->second) && !terminal(*r->second);
      if (pending) {
        ++movedAway;
        ++it;
      } else {
        it = known.erase(it);  // replaced and healthy, or nothing replaces it (job gone, run done)
      }
    }
  }
  DrainPlan plan = planDrain(spec, onWorker, replacementOf, deadlinePassed, movedAway);

  if (fresh && events_ != nullptr) {
    events_->event(*worker, kube::EventType::kNormal, "DrainStarted",
                   "draining " + std::to_string(plan.remaining) + " allocation(s), " + std::to_string(spec.maxParallel) +
                       " at a time, deadline " + std::to_string(spec.deadlineSeconds) + "s");
  }
  // Each write is fenced by the cached resourceVersion (PUT): a 409 means our view was stale and
  // the next pass decides again, so the budget is never exceeded on stale data.
  for (const JsonPtr& a : plan.migrate) {
    Json o = kube::cloneJson(*a);
    if (JsonValue* sp = kube::find(o, {"spec"})) kube::setMember(*sp, "migrate", JsonValue(true), o.GetAllocator());
    auto r = client_->update(kAllocations.withNamespace(kube::ns(*a)), o);
    if (!r) {
      if (r.status().code() == 409 || r.status().code() == 404) break;
      return r.status();
    }
    {
      std::lock_guard l(mu_);
      migrating_[workerName].insert(kube::Informer::keyOf(*a));
    }
    logLine("worker=" + workerName + " alloc=" + kube::Informer::keyOf(*a) + " migrating (drain)");
    if (events_ != nullptr) {
      events_->event(*a, kube::EventType::kNormal, "Migrating", "Worker " + workerName + " is draining");
    }
  }
  for (const JsonPtr& a : plan.stop) {
    Json o = kube::cloneJson(*a);
    if (JsonValue* sp = kube::find(o, {"spec"})) kube::setString(*sp, "desiredState", "stop", o.GetAllocator());
    auto r = client_->update(kAllocations.withNamespace(kube::ns(*a)), o);
    if (!r && r.status().code() != 409 && r.status().code() != 404) return r.status();
    if (r && events_ != nullptr) {
      events_->event(*a, kube::EventType::kWarning, "DrainDeadlineReached",
                     "Worker " + workerName + "'s drain deadline passed: stopping");
    }
  }
  if (!plan.stop.empty()) logLine("worker=" + workerName + " drain deadline passed: stopping " + std::to_string(plan.stop.size()));

  bool wasComplete = status != nullptr && kube::getBool(*status, {"complete"});
  int64_t wasRemaining = status != nullptr ? kube::getInt(*status, {"remaining"}).value_or(-1) : -1;
  if (fresh || wasComplete != plan.complete || wasRemaining != plan.remaining) {
    std::string patch = R"({"status":{"drain":{"startedAt":")" + kube::formatTime(*started) + R"(","remaining":)" +
                        std::to_string(plan.remaining) + R"(,"complete":)" + (plan.complete ? "true" : "false") + "}}}";
    auto r = client_->patchStatus(kWorkers.withName(workerName), kube::PatchType::kMerge, patch);
    if (!r && r.status().code() != 404) return r.status();
    if (plan.complete && !wasComplete) {
      logLine("worker=" + workerName + " drain complete");
      if (events_ != nullptr) events_->event(*worker, kube::EventType::kNormal, "DrainComplete", "every allocation has moved");
    }
  }
  DrainResult res;
  if (!plan.complete) {
    res.requeueAfter = options_.resync;
    if (!deadlinePassed) {
      auto untilDeadline = std::chrono::duration_cast<std::chrono::milliseconds>(
          *started + std::chrono::seconds(spec.deadlineSeconds) - now);
      res.requeueAfter = std::max(std::chrono::milliseconds(1), std::min(*res.requeueAfter, untilDeadline));
    }
  }
  return res;
}

// ---- DrainController ----

void DrainController::start(const ControllerContext& ctx) {
  if (loop_) return;
  const SharedInformers& inf = ctx.informers;
  reconciler_ = std::make_unique<DrainReconciler>(ctx.client, *inf.workers, *inf.allocations, ctx.events.get(), ctx.now, options_);
  loop_ = std::make_unique<ReconcileLoop>("drain", [this](const std::string& key)
                                              -> kube::StatusOr<std::optional<std::chrono::milliseconds>> {
    auto r = reconciler_->reconcile(key);
    if (!r) return r.status();
    return r->requeueAfter;
  });
  kube::WorkQueue* q = &loop_->queue();
  auto onWorker = [q](const JsonPtr& w) {
    if (kube::find(*w, {"spec", "drain"}) != nullptr || kube::find(*w, {"status", "drain"}) != nullptr) q->add(kube::name(*w));
  };
  inf.workers->addEventHandler({onWorker, [onWorker](const JsonPtr&, const JsonPtr& n) { onWorker(n); }, nullptr});
  kube::Informer* workers = inf.workers.get();
  DrainReconciler* rec = reconciler_.get();
  auto onAlloc = [q, workers, rec](const JsonPtr& a) {
    for (const std::string& w : rec->workersFor(*a)) {
      JsonPtr worker = workers->get(w);
      if (worker && kube::find(*worker, {"spec", "drain"}) != nullptr) q->add(w);
    }
  };
  inf.allocations->addEventHandler({onAlloc, [onAlloc](const JsonPtr&, const JsonPtr& n) { onAlloc(n); }, onAlloc});
  loop_->start(ctx, 1);
}

void DrainController::stop() {
  if (loop_) loop_->stop();
}

}  // namespace op
