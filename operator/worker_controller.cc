#include "operator/worker_controller.h"

#include <iostream>

#include "kube/json.h"
#include "kube/thread_name.h"

namespace op {

using kube::Json;
using kube::JsonPtr;
using kube::JsonValue;
using kube::Status;

namespace {

bool terminalPhase(const std::string& p) { return p == "Succeeded" || p == "Failed" || p == "Lost"; }

std::string readyStatus(const JsonValue& worker) {
  if (const JsonValue* conds = kube::find(worker, {"status", "conditions"}); conds && conds->IsArray()) {
    for (const auto& c : conds->GetArray()) {
      if (kube::getString(c, {"type"}) == "Ready") return kube::getString(c, {"status"});
    }
  }
  return "";
}

void logLine(const std::string& m) { std::cerr << kube::nowTime() << " foxden-operator: " << m << std::endl; }

}  // namespace

// ---- WorkerHealth ----

void WorkerHealth::observe(const std::string& worker, const std::string& renewTime, kube::TimePoint now) {
  auto [it, fresh] = probes_.try_emplace(worker, Probe{renewTime, now});
  if (!fresh && it->second.renewTime != renewTime) it->second = Probe{renewTime, now};
}

void WorkerHealth::retain(const std::set<std::string>& workers) {
  for (auto it = probes_.begin(); it != probes_.end();) {
    it = workers.count(it->first) != 0 ? std::next(it) : probes_.erase(it);
  }
}

WorkerHealth::Verdict WorkerHealth::evaluate(kube::TimePoint now) const {
  Verdict v;
  v.total = static_cast<int>(probes_.size());
  for (const auto& [name, p] : probes_) {
    if (now - p.observedAt > grace_) v.dark.push_back(name);
  }
  int dark = static_cast<int>(v.dark.size());
  // Kubernetes' zone states: FullDisruption (none ready) or PartialDisruption (more than two
  // not ready and at least the threshold's fraction).
  v.storm = dark > 0 && (dark == v.total ||
                         (dark > 2 && static_cast<double>(dark) / static_cast<double>(v.total) >= stormFraction_));
  return v;
}

// ---- WorkerMonitor ----

WorkerMonitor::WorkerMonitor(kube::RestClientPtr client, kube::Informer& workers, kube::Informer& leases,
                                   kube::Informer& allocations, kube::EventRecorder* events,
                                   std::function<kube::TimePoint()> clock, WorkerMonitorOptions options)
    : client_(std::move(client)),
      workers_(workers),
      leases_(leases),
      allocations_(allocations),
      events_(events),
      clock_(std::move(clock)),
      options_(std::move(options)),
      health_(options_.gracePeriod, options_.stormFraction) {}

int WorkerMonitor::monitorOnce() {
  if (!workers_.hasSynced() || !leases_.hasSynced() || !allocations_.hasSynced()) return 0;
  kube::TimePoint now = clock_();
  std::set<std::string> names;
  std::map<std::string, JsonPtr> byName;
  for (const JsonPtr& w : workers_.list()) {
    std::string n = kube::name(*w);
    JsonPtr lease = leases_.get(options_.leaseNamespace + "/" + n);
    health_.observe(n, lease ? kube::getString(*lease, {"spec", "renewTime"}) : "", now);
    names.insert(n);
    byName[n] = w;
  }
  health_.retain(names);
  WorkerHealth::Verdict v = health_.evaluate(now);
  int failures = 0;

  if (v.storm != storm_) {
    storm_ = v.storm;
    std::string msg = std::to_string(v.dark.size()) + " of " + std::to_string(v.total) +
                      " workers stopped renewing their leases at once";
    if (v.storm) {
      msg += ": not marking their allocations Lost (more than " +
             std::to_string(static_cast<int>(options_.stormFraction * 100)) + "% dark, or all) until they come back";
    } else {
      msg = "fewer workers are dark (" + std::to_string(v.dark.size()) + " of " + std::to_string(v.total) +
            "): allocations of dark workers are marked Lost again";
    }
    logLine(msg);
    // One Event, on the first dark worker (Events need an object; Workers are what went dark).
    std::string subject = v.dark.empty() ? std::string() : v.dark.front();
    if (events_ != nullptr && byName.count(subject) != 0) {
      events_->event(*byName[subject], v.storm ? kube::EventType::kWarning : kube::EventType::kNormal,
                     v.storm ? "EvictionsSuppressed" : "EvictionsResumed", msg);
    }
  }

  std::set<std::string> dark(v.dark.begin(), v.dark.end());
  for (const std::string& n : v.dark) {
    const JsonPtr& w = byName[n];
    if (readyStatus(*w) == "Unknown") continue;
    Status st = markUnknown(w);
    if (!st) {
      ++failures;
      if (st.code() != 409) logLine("worker=" + n + " marking Ready Unknown: " + st.message());
    }
  }

  std::set<std::string> gone;
  for (const JsonPtr& a : allocations_.list()) {
    if (terminalPhase(kube::getString(*a, {"status", "phase"}))) continue;
    std::string worker = kube::getString(*a, {"spec", "workerName"});
    std::string key = kube::Informer::keyOf(*a);
    if (names.count(worker) == 0) {
      // Seen missing on two passes in a row: not just a Worker our cache has not caught up with.
      gone.insert(key);
      if (goneCandidates_.count(key) == 0) continue;
      Status st = markLost(a, "WorkerGone", "Worker " + worker + " was deleted");
      if (!st) ++failures;
      continue;
    }
    if (v.storm || dark.count(worker) == 0) continue;
    Status st = markLost(a, "WorkerLost",
                         "Worker " + worker + " did not renew its lease within " +
                             std::to_string(options_.gracePeriod.count() / 1000) + "s");
    if (!st) {
      ++failures;
      if (st.code() != 409) logLine("alloc=" + key + " marking Lost: " + st.message());
    }
  }
  goneCandidates_ = std::move(gone);
  return failures;
}

Status WorkerMonitor::markUnknown(const JsonPtr& worker) {
  Json w = kube::cloneJson(*worker);
  auto& a = w.GetAllocator();
  JsonValue& status = kube::ensureObject(w, "status", a);
  if (!status.HasMember("conditions") || !status["conditions"].IsArray()) {
    kube::setMember(status, "conditions", JsonValue(rapidjson::kArrayType), a);
  }
  JsonValue& conds = status["conditions"];
  JsonValue* ready = nullptr;
  for (auto& c : conds.GetArray()) {
    if (kube::getString(c, {"type"}) == "Ready") ready = &c;
  }
  if (ready == nullptr) {
    JsonValue c(rapidjson::kObjectType);
    kube::setString(c, "type", "Ready", a);
    conds.PushBack(std::move(c), a);
    ready = &conds[conds.Size() - 1];
  }
  std::string now = kube::formatTime(clock_());
  kube::setString(*ready, "status", "Unknown", a);
  kube::setString(*ready, "reason", "LeaseExpired", a);
  kube::setString(*ready, "message", "Worker stopped renewing its lease (foxden-system/" + kube::name(*worker) + ")", a);
  kube::setString(*ready, "lastTransitionTime", now, a);
  // updateStatus carries the cached resourceVersion: a worker that renewed meanwhile (its agent
  // wrote Ready True) makes this a 409, and the next pass looks again.
  auto r = client_->updateStatus(kWorkers, w);
  if (!r) return r.status();
  ++markedUnknown_;
  logLine("worker=" + kube::name(*worker) + " Ready=Unknown (LeaseExpired)");
  if (events_ != nullptr) {
    events_->event(*worker, kube::EventType::kWarning, "WorkerNotReady",
                   "Worker stopped renewing its lease for more than " +
                       std::to_string(options_.gracePeriod.count() / 1000) + "s: Ready is Unknown");
  }
  return Status::ok();
}

Status WorkerMonitor::markLost(const JsonPtr& alloc, const std::string& reason, const std::string& message) {
  Json o = kube::cloneJson(*alloc);
  auto& a = o.GetAllocator();
  JsonValue& status = kube::ensureObject(o, "status", a);
  kube::setString(status, "phase", "Lost", a);
  kube::setString(status, "reason", reason, a);
  kube::setString(status, "message", message, a);
  kube::setString(status, "finishedAt", kube::formatTime(clock_()), a);
  auto r = client_->updateStatus(kAllocations.withNamespace(kube::ns(*alloc)), o);
  if (!r) return r.status();
  ++markedLost_;
  logLine("alloc=" + kube::Informer::keyOf(*alloc) + " Lost (" + reason + ")");
  if (events_ != nullptr) events_->event(*alloc, kube::EventType::kWarning, reason, message);
  return Status::ok();
}

// ---- WorkerController ----

void WorkerController::start(const ControllerContext& ctx) {
  if (thread_.joinable()) return;
  const SharedInformers& inf = ctx.informers;
  monitor_ = std::make_unique<WorkerMonitor>(ctx.client, *inf.workers, *inf.leases, *inf.allocations, ctx.events.get(),
                                             [] { return kube::Clock::now(); }, options_);
  std::string l = "controller=\"worker\"";
  passes_ = &ctx.metrics->counter("foxden_operator_reconciles_total", "Reconciles run.", l);
  failures_ = &ctx.metrics->counter("foxden_operator_reconcile_errors_total", "Reconciles that failed (requeued with backoff).", l);
  WorkerMonitor* m = monitor_.get();
  ctx.metrics->gauge("foxden_operator_workers_marked_unknown_total", "Workers whose Ready went Unknown (lease expired).", "",
                     [m] { return static_cast<double>(m->workersMarkedUnknown()); });
  ctx.metrics->gauge("foxden_operator_allocations_lost_total", "Allocations marked Lost with their worker.", "",
                     [m] { return static_cast<double>(m->allocationsMarkedLost()); });
  ctx.metrics->gauge("foxden_operator_eviction_storm", "1 while too many workers are dark to mark allocations Lost.", "",
                     [m] { return m->inStorm() ? 1.0 : 0.0; });
  thread_ = std::thread([this] {
    kube::nameThread("worker-ctl");
    run();
  });
}

void WorkerController::stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WorkerController::run() {
  std::unique_lock l(mu_);
  while (!stopping_) {
    l.unlock();
    try {
      passes_->inc();
      if (monitor_->monitorOnce() > 0) failures_->inc();
    } catch (const std::exception& e) {
      failures_->inc();
      logLine(std::string("worker monitor: ") + e.what());
    }
    l.lock();
    cv_.wait_for(l, options_.monitorPeriod, [this] { return stopping_; });
  }
}

}  // namespace op
