#include "operator/job/job_controller.h"

#include <algorithm>
#include <iostream>

#include "kube/quantity.h"
#include "kube/timeutil.h"
#include "kube/thread_name.h"

namespace op {

using kube::Json;
using kube::JsonPtr;
using kube::JsonValue;
using kube::Status;
using kube::StatusOr;

namespace {

int64_t milli(const JsonValue* v) {
  if (v == nullptr) return 0;
  std::string text = v->IsString() ? std::string(kube::view(*v)) : v->IsInt64() ? std::to_string(v->GetInt64()) : "";
  auto q = kube::Quantity::parse(text);
  return q ? q->milliValue() : 0;
}

std::string jobKeyOfAlloc(const JsonValue& alloc) {
  std::string job = kube::getString(alloc, {"metadata", "labels", kLabelJob});
  return job.empty() ? "" : kube::ns(alloc) + "/" + job;
}

bool ownedBy(const JsonValue& alloc, const std::string& jobUid) {
  const JsonValue* refs = kube::find(alloc, {"metadata", "ownerReferences"});
  if (refs == nullptr || !refs->IsArray() || refs->Empty()) return true;  // adopted by label
  for (const auto& r : refs->GetArray()) {
    if (kube::getString(r, {"uid"}) == jobUid) return true;
  }
  return false;
}

bool hasFinalizer(const JsonValue& o) {
  const JsonValue* fs = kube::find(o, {"metadata", "finalizers"});
  if (fs == nullptr || !fs->IsArray()) return false;
  return std::any_of(fs->Begin(), fs->End(), [](const JsonValue& f) { return kube::view(f) == kFinalizer; });
}

// A worker's scheduling-relevant state; a change of it may make unplaceable groups fit.
std::string workerSignature(const JsonValue& w) {
  scheduler::WorkerInfo i = workerInfoOf(w);
  std::string s = std::to_string(i.ready) + std::to_string(i.schedulable) + std::to_string(i.cpuMilli) + "/" +
                  std::to_string(i.memoryBytes) + "/" + std::to_string(i.gpus.size());
  for (const auto& d : i.drivers) s += "," + d;
  for (const auto& [k, v] : i.labels) s += ";" + k + "=" + v;
  return s;
}

// Runs fn(0..n-1) on up to 8 threads (this one included): a 1,000-allocation group is not 1,000
// API round trips in a row. fn must be thread-safe; it must not throw.
void parallelFor(size_t n, const std::function<void(size_t)>& fn) {
  std::atomic<size_t> next{0};
  auto run = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < std::min<size_t>(8, n); ++i) threads.emplace_back(run);
  run();
  for (auto& t : threads) t.join();
}

}  // namespace

scheduler::WorkerInfo workerInfoOf(const JsonValue& w) {
  scheduler::WorkerInfo i;
  i.name = kube::name(w);
  if (const JsonValue* cs = kube::find(w, {"status", "conditions"}); cs && cs->IsArray()) {
    for (const auto& c : cs->GetArray()) {
      if (kube::getString(c, {"type"}) == "Ready") i.ready = kube::getString(c, {"status"}) == "True";
    }
  }
  i.schedulable = !kube::getBool(w, {"spec", "unschedulable"}) && kube::find(w, {"spec", "drain"}) == nullptr;
  if (const JsonValue* ls = kube::find(w, {"metadata", "labels"}); ls && ls->IsObject()) {
    for (const auto& m : ls->GetObject()) {
      if (m.value.IsString()) i.labels[std::string(kube::view(m.name))] = std::string(kube::view(m.value));
    }
  }
  if (const JsonValue* ds = kube::find(w, {"status", "drivers"}); ds && ds->IsArray()) {
    for (const auto& d : ds->GetArray()) if (d.IsString()) i.drivers.emplace_back(kube::view(d));
  }
  i.cpuMilli = milli(kube::find(w, {"status", "allocatable", "cpu"}));
  i.memoryBytes = milli(kube::find(w, {"status", "allocatable", "memory"})) / 1000;
  if (const JsonValue* gs = kube::find(w, {"status", "gpus"}); gs && gs->IsArray()) {
    for (const auto& g : gs->GetArray()) {
      scheduler::Gpu gpu;
      gpu.vendor = kube::getString(g, {"vendor"}, "nvidia");
      gpu.index = static_cast<int>(kube::getInt(g, {"index"}).value_or(0));
      gpu.uuid = kube::getString(g, {"uuid"});
      gpu.model = kube::getString(g, {"model"});
      gpu.memoryBytes = kube::getInt(g, {"memoryBytes"}).value_or(0);
      i.gpus.push_back(std::move(gpu));
    }
  }
  return i;
}

WorkerOffer workerOfferOf(const JsonValue& w) {
  WorkerOffer o;
  scheduler::WorkerInfo i = workerInfoOf(w);
  o.drivers = i.drivers;
  for (const auto& g : i.gpus) (g.vendor == "amd" ? o.amdGpus : o.nvidiaGpus)++;
  return o;
}

std::optional<scheduler::AllocInfo> allocInfoOf(const JsonValue& al) {
  std::string phase = kube::getString(al, {"status", "phase"});
  if (phase == "Succeeded" || phase == "Failed" || phase == "Lost") return std::nullopt;
  // Asked to stop, it holds its worker's resources until the agent reports it terminal: a
  // replacement is created as soon as the stop is written, and must not over-commit the worker
  // while the old process runs out its kill timeout. One the agent never reported on was never
  // started (an agent starts nothing that is asked to stop, and reports a status once it starts).
  const bool stopping = kube::getString(al, {"spec", "desiredState"}, "run") == "stop";
  if (stopping && phase.empty()) return std::nullopt;
  scheduler::AllocInfo i;
  i.stopping = stopping;
  i.uid = kube::ns(al) + "/" + kube::name(al);  // the informer key, unique and known before creation
  i.worker = kube::getString(al, {"spec", "workerName"});
  i.jobKey = jobKeyOfAlloc(al);
  i.group = kube::getString(al, {"spec", "groupName"});
  std::string prio = kube::getString(al, {"metadata", "annotations", kAnnPriority});
  i.priority = prio.empty() ? 50 : std::atoi(prio.c_str());
  i.cpuMilli = milli(kube::find(al, {"spec", "resources", "cpu"}));
  i.memoryBytes = milli(kube::find(al, {"spec", "resources", "memory"})) / 1000;
  if (const JsonValue* gs = kube::find(al, {"spec", "resources", "gpus"}); gs && gs->IsArray()) {
    for (const auto& g : gs->GetArray()) {
      scheduler::Gpu gpu;
      gpu.vendor = kube::getString(g, {"vendor"}, "nvidia");
      gpu.index = static_cast<int>(kube::getInt(g, {"index"}).value_or(0));
      gpu.uuid = kube::getString(g, {"uuid"});
      i.gpus.push_back(std::move(gpu));
    }
  }
  if (const JsonValue* ps = kube::find(al, {"spec", "resources", "ports"}); ps && ps->IsArray()) {
    for (const auto& p : ps->GetArray()) {
      i.ports.push_back({kube::getString(p, {"name"}), static_cast<int>(kube::getInt(p, {"value"}).value_or(0))});
    }
  }
  return i;
}

Json buildAllocation(const JsonValue& job, const JobSpec& spec, const GroupSpec& group, const JsonValue& groupJson,
                     const PlaceRequest& req, const scheduler::Placement& placement, int64_t version) {
  Json o(rapidjson::kObjectType);
  auto& a = o.GetAllocator();
  std::string jobName = kube::name(job);
  kube::setString(o, "apiVersion", "foxden.io/v1alpha1", a);
  kube::setString(o, "kind", "Allocation", a);
  JsonValue& md = kube::ensureObject(o, "metadata", a);
  kube::setString(md, "name", allocName(jobName, group.name, req.slot, spec.isSystem(), req.attempt), a);
  kube::setString(md, "namespace", kube::ns(job), a);
  JsonValue& labels = kube::ensureObject(md, "labels", a);
  kube::setString(labels, kLabelJob, jobName, a);
  kube::setString(labels, kLabelGroup, group.name, a);
  kube::setString(labels, kLabelWorker, placement.worker, a);
  JsonValue& ann = kube::ensureObject(md, "annotations", a);
  kube::setString(ann, kAnnSlot, req.slot, a);
  kube::setString(ann, kAnnAttempt, std::to_string(req.attempt), a);
  kube::setString(ann, kAnnHash, group.hash, a);
  kube::setString(ann, kAnnPriority, std::to_string(spec.priority), a);
  if (!req.reschedules.empty()) {
    std::string times;
    for (int64_t t : req.reschedules) times += (times.empty() ? "" : ",") + std::to_string(t);
    kube::setString(ann, kAnnReschedules, times, a);
  }
  JsonValue refs(rapidjson::kArrayType);
  JsonValue ref(rapidjson::kObjectType);
  kube::setString(ref, "apiVersion", "foxden.io/v1alpha1", a);
  kube::setString(ref, "kind", "Job", a);
  kube::setString(ref, "name", jobName, a);
  kube::setString(ref, "uid", kube::uid(job), a);
  ref.AddMember("controller", true, a);
  ref.AddMember("blockOwnerDeletion", true, a);
  refs.PushBack(std::move(ref), a);
  md.AddMember("ownerReferences", std::move(refs), a);

  JsonValue& sp = kube::ensureObject(o, "spec", a);
  kube::setString(sp, "workerName", placement.worker, a);
  kube::setString(sp, "jobName", jobName, a);
  kube::setString(sp, "groupName", group.name, a);
  kube::setString(sp, "jobType", spec.type, a);
  sp.AddMember("index", req.index, a);
  sp.AddMember("jobVersion", version, a);
  if (req.canary) sp.AddMember("canary", true, a);
  kube::setString(sp, "desiredState", "run", a);
  if (!req.previous.empty()) kube::setString(sp, "previousAllocation", req.previous, a);
  for (const char* f : {"restartPolicy", "tasks", "volumes"}) {
    if (const JsonValue* v = kube::find(groupJson, {f})) sp.AddMember(kube::str(f, a), JsonValue(*v, a), a);
  }
  JsonValue& res = kube::ensureObject(sp, "resources", a);
  kube::setString(res, "cpu", std::to_string(group.request.cpuMilli) + "m", a);
  kube::setString(res, "memory", std::to_string(group.request.memoryBytes), a);
  if (!placement.gpus.empty()) {
    JsonValue gs(rapidjson::kArrayType);
    for (const auto& g : placement.gpus) {
      JsonValue e(rapidjson::kObjectType);
      kube::setString(e, "vendor", g.vendor, a);
      e.AddMember("index", g.index, a);
      if (!g.uuid.empty()) kube::setString(e, "uuid", g.uuid, a);
      gs.PushBack(std::move(e), a);
    }
    res.AddMember("gpus", std::move(gs), a);
  }
  if (!placement.ports.empty()) {
    JsonValue ps(rapidjson::kArrayType);
    for (const auto& p : placement.ports) {
      JsonValue e(rapidjson::kObjectType);
      kube::setString(e, "name", p.name, a);
      e.AddMember("value", p.value, a);
      ps.PushBack(std::move(e), a);
    }
    res.AddMember("ports", std::move(ps), a);
  }
  return o;
}

// ---- the controller ------------------------------------------------------------------------

void JobController::log(const std::string& msg) const { std::cerr << "foxden-operator: job: " << msg << std::endl; }

void JobController::start(const ControllerContext& ctx) {
  if (started_.exchange(true)) return;
  ctx_ = ctx;
  queue_ = std::make_unique<kube::WorkQueue>(kube::RateLimiterOptions{.baseDelay = std::chrono::milliseconds(500),
                                                                      .maxDelay = std::chrono::milliseconds(60000),
                                                                      .qps = 0});
  auto& m = *ctx_.metrics;
  std::string l = "controller=\"job\"";
  reconciles_ = &m.counter("foxden_operator_reconciles_total", "Reconciles run.", l);
  errors_ = &m.counter("foxden_operator_reconcile_errors_total", "Reconciles that failed (requeued with backoff).", l);
  placements_ = &m.counter("foxden_operator_placements_total", "Allocations placed and created.", l);
  placementFailures_ = &m.counter("foxden_operator_placement_failures_total", "Placements that found no worker.", l);
  placementLatency_ = &m.histogram("foxden_operator_placement_duration_seconds", "Time of one placement decision.",
                                   {0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1}, l);
  kube::WorkQueue* q = queue_.get();
  m.gauge("foxden_operator_workqueue_depth", "Keys waiting in the work queue.", l, [q] { return static_cast<double>(q->len()); });

  auto enqueueJob = [this](const JsonPtr& o) { queue_->add(kube::Informer::keyOf(*o)); };
  ctx_.informers.jobs->addEventHandler({enqueueJob, [enqueueJob](const JsonPtr&, const JsonPtr& n) { enqueueJob(n); }, enqueueJob});
  auto onAlloc = [this](const JsonPtr& o, bool present) {
    std::string ak = kube::Informer::keyOf(*o);
    {
      std::lock_guard l(placementMu_);
      std::optional<scheduler::AllocInfo> info = present ? allocInfoOf(*o) : std::nullopt;
      if (info) state_.addAlloc(std::move(*info));
      else state_.removeAlloc(ak);
    }
    std::string jk = jobKeyOfAlloc(*o);
    if (jk.empty()) return;
    {
      std::lock_guard l(indexMu_);
      if (present) allocIndex_[jk].insert(ak);
      else if (auto it = allocIndex_.find(jk); it != allocIndex_.end()) {
        it->second.erase(ak);
        if (it->second.empty()) allocIndex_.erase(it);
      }
    }
    queue_->add(jk);
  };
  ctx_.informers.allocations->addEventHandler(
      {[onAlloc](const JsonPtr& o) { onAlloc(o, true); }, [onAlloc](const JsonPtr&, const JsonPtr& n) { onAlloc(n, true); },
       [onAlloc](const JsonPtr& o) { onAlloc(o, false); }});
  // Workers joining, leaving or changing what they offer can make a group placeable (or a system
  // job's set of workers change): every Job is looked at again (the queue de-duplicates).
  ctx_.informers.workers->addEventHandler(
      {[this](const JsonPtr& w) {
         noteWorker(*w, true);
         enqueueAllJobs();
       },
       [this](const JsonPtr& o, const JsonPtr& n) {
         if (workerSignature(*o) == workerSignature(*n)) return;  // heartbeats and usage figures
         noteWorker(*n, true);
         enqueueAllJobs();
       },
       [this](const JsonPtr& w) {
         noteWorker(*w, false);
         enqueueAllJobs();
       }});
  {
    std::lock_guard l(placementMu_);
    scheduler_ = std::make_unique<scheduler::Scheduler>(state_, options_.scheduler);
  }
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this] {
    kube::nameThread("job-ctl");
    worker();
  });
}

void JobController::stop() {
  if (!started_.load() || !queue_) return;
  queue_->shutDown();
  for (auto& t : threads_) if (t.joinable()) t.join();
  threads_.clear();
}

void JobController::noteWorker(const JsonValue& w, bool present) {
  {
    std::lock_guard l(placementMu_);
    if (present) state_.upsertWorker(workerInfoOf(w));
    else state_.removeWorker(kube::name(w));
  }
  std::lock_guard l(offersMu_);
  if (present) offers_[kube::name(w)] = workerOfferOf(w);
  else offers_.erase(kube::name(w));
  uniqueOffers_.reset();
}

std::vector<WorkerOffer> JobController::workerOffers() {
  std::lock_guard l(offersMu_);
  if (!uniqueOffers_) {
    // Distinct (drivers, has GPUs) combinations: all the spec check needs, whatever the fleet size.
    std::map<std::string, WorkerOffer> distinct;
    for (const auto& [name, o] : offers_) {
      std::string key = std::to_string(o.nvidiaGpus > 0) + std::to_string(o.amdGpus > 0);
      for (const auto& d : o.drivers) key += "," + d;
      distinct.emplace(key, o);
    }
    uniqueOffers_.emplace();
    for (auto& [k, o] : distinct) uniqueOffers_->push_back(o);
  }
  return *uniqueOffers_;
}

void JobController::enqueueAllJobs() {
  if (!ctx_.informers.jobs->hasSynced()) return;  // the initial list enqueues every Job anyway
  for (const auto& j : ctx_.informers.jobs->list()) queue_->add(kube::Informer::keyOf(*j));
}

void JobController::worker() {
  while (auto key = queue_->get()) {
    // Reconcile only once every cache has synced: a partial view would place duplicates.
    if (!ctx_.informers.synced()) {
      queue_->done(*key);
      queue_->addAfter(*key, std::chrono::milliseconds(200));
      continue;
    }
    reconciles_->inc();
    StatusOr<Result> r = Status::internal("not run");
    try {
      r = reconcile(*key);
    } catch (const std::exception& e) {
      r = Status::internal(std::string("reconcile threw: ") + e.what());
    }
    if (!r) {
      errors_->inc();
      if (r.status().code() != 409) log("job=" + *key + " reconcile: " + r.status().toString());
      queue_->done(*key);
      queue_->addRateLimited(*key);
      continue;
    }
    queue_->done(*key);
    if (r->backoff) {
      queue_->addRateLimited(*key);
    } else {
      queue_->forget(*key);
      if (r->requeueAfter) queue_->addAfter(*key, *r->requeueAfter);
    }
  }
}

std::vector<JsonPtr> JobController::allocsOf(const std::string& ns, const std::string& job) const {
  std::set<std::string> keys;
  {
    std::lock_guard l(indexMu_);
    auto it = allocIndex_.find(ns + "/" + job);
    if (it != allocIndex_.end()) keys = it->second;
  }
  std::vector<JsonPtr> out;
  for (const auto& k : keys) {
    if (JsonPtr a = ctx_.informers.allocations->get(k)) out.push_back(std::move(a));
  }
  return out;
}

void JobController::event(const JsonValue& job, const EventSpec& e) {
  if (ctx_.events) ctx_.events->event(job, e.warning ? kube::EventType::kWarning : kube::EventType::kNormal, e.reason, e.message);
}

Status JobController::updateAlloc(const JsonPtr& alloc, const std::function<void(Json&)>& edit) {
  Json copy = kube::cloneJson(*alloc);
  edit(copy);
  auto r = ctx_.client->update(kAllocations.withNamespace(kube::ns(*alloc)), copy);
  if (!r && r.status().code() == 404) return Status::ok();
  return r ? Status::ok() : r.status();
}

StatusOr<JobController::Result> JobController::finalize(const JsonPtr& job, const std::vector<JsonPtr>& allocs) {
  std::string jobName = kube::name(*job);
  bool waiting = false;
  for (const auto& al : allocs) {
    std::string phase = kube::getString(*al, {"status", "phase"});
    bool terminal = phase == "Succeeded" || phase == "Failed" || phase == "Lost";
    bool workerGone = !ctx_.informers.workers->get(kube::getString(*al, {"spec", "workerName"}));
    bool stopAsked = kube::getString(*al, {"spec", "desiredState"}, "run") == "stop";
    // Never started (no status) and asked to stop: nothing runs, nothing to wait for.
    bool neverRan = phase.empty() && stopAsked;
    if (terminal || workerGone || neverRan) {
      kube::DeleteOptions d;
      d.preconditionUid = kube::uid(*al);
      auto r = ctx_.client->remove(kAllocations.withNamespace(kube::ns(*al)).withName(kube::name(*al)), d);
      if (!r && r.status().code() != 404) return r.status();
      continue;
    }
    waiting = true;
    if (!stopAsked) {
      if (Status st = updateAlloc(al, [](Json& o) { kube::setString(o["spec"], "desiredState", "stop", o.GetAllocator()); }); !st) {
        return st;
      }
    }
  }
  if (waiting || !allocs.empty()) {
    // Wait for the agents' reports (an allocation event requeues us sooner).
    return Result{std::chrono::milliseconds(2000), false};
  }
  Json copy = kube::cloneJson(*job);
  JsonValue* fs = kube::find(copy, {"metadata", "finalizers"});
  if (fs && fs->IsArray()) {
    for (auto it = fs->Begin(); it != fs->End();) {
      if (kube::view(*it) == kFinalizer) it = fs->Erase(it);
      else ++it;
    }
  }
  auto r = ctx_.client->update(kJobs.withNamespace(kube::ns(*job)), copy);
  if (!r && r.status().code() != 404) return r.status();
  event(*job, {false, "Deleted", "every allocation stopped and removed"});
  return Result{};
}

StatusOr<JobController::Result> JobController::reconcile(const std::string& key) {
  JsonPtr job = ctx_.informers.jobs->get(key);
  if (!job) return Result{};
  const std::string ns = kube::ns(*job), jobName = kube::name(*job), jobUid = kube::uid(*job);
  const TimePoint now = ctx_.now();
  std::vector<JsonPtr> allocs;
  for (auto& al : allocsOf(ns, jobName)) {
    if (ownedBy(*al, jobUid)) allocs.push_back(std::move(al));
  }
  if (kube::find(*job, {"metadata", "deletionTimestamp"}) != nullptr) {
    if (!hasFinalizer(*job)) return Result{};
    return finalize(job, allocs);
  }
  if (!hasFinalizer(*job)) {
    Json copy = kube::cloneJson(*job);
    auto& a = copy.GetAllocator();
    JsonValue& md = copy["metadata"];
    if (!md.HasMember("finalizers") || !md["finalizers"].IsArray()) kube::setMember(md, "finalizers", JsonValue(rapidjson::kArrayType), a);
    md["finalizers"].PushBack(kube::str(kFinalizer, a), a);
    auto r = ctx_.client->update(kJobs.withNamespace(ns), copy);
    if (!r) return r.status();
    return Result{};  // the update's event brings us back with the new resourceVersion
  }

  StatusOr<JobSpec> parsed = parseJobSpec(*job, workerOffers());
  const int64_t gen = kube::getInt(*job, {"metadata", "generation"}).value_or(0);
  if (!parsed) {
    const std::string msg = parsed.status().message();
    Json st = invalidStatus(*job, msg, now);
    const JsonValue* old = kube::find(*job, {"status"});
    const JsonValue* oldCond = old ? condition(*old, "InvalidSpec") : nullptr;
    bool announced = oldCond && kube::getString(*oldCond, {"status"}) == "True" && kube::getString(*oldCond, {"message"}) == msg;
    if (old == nullptr || canonicalJson(*old) != canonicalJson(st)) {
      Json copy = kube::cloneJson(*job);
      kube::setMember(copy, "status", JsonValue(st, copy.GetAllocator()), copy.GetAllocator());
      auto r = ctx_.client->updateStatus(kJobs.withNamespace(ns), copy);
      if (!r) return r.status();
    }
    if (!announced) event(*job, {true, "InvalidSpec", msg});
    // Not requeued: the next change of the Job (or of the workers) brings it back.
    return Result{};
  }
  const JobSpec& spec = *parsed;

  PlanInput in;
  in.job = job;
  in.spec = &spec;
  in.now = now;
  for (const auto& al : allocs) in.allocs.push_back(viewOf(al, spec));
  // The planner asks only whether the workers its allocations name still exist.
  for (const auto& al : in.allocs) {
    if (ctx_.informers.workers->get(al.worker)) in.workers.insert(al.worker);
  }
  if (spec.isSystem()) {
    std::vector<JsonPtr> workers = ctx_.informers.workers->list();
    // Eligible: ready, schedulable, and feasible on an empty worker (whether it fits next to what
    // runs there is the placement's question, reported as unplaced).
    scheduler::ClusterState empty;
    for (const auto& w : workers) empty.upsertWorker(workerInfoOf(*w));
    scheduler::Scheduler s(empty, options_.scheduler);
    for (const auto& g : spec.groups) {
      auto& set = in.eligible[g.name];
      for (const auto& w : workers) {
        scheduler::WorkerInfo wi = workerInfoOf(*w);
        if (wi.ready && wi.schedulable && !s.infeasibleReason(g.request, wi.name)) set.insert(wi.name);
      }
    }
  }
  Plan plan = planJob(in);

  std::map<std::string, JsonPtr> byName;
  for (const auto& al : allocs) byName[kube::name(*al)] = al;
  Status firstError;
  std::set<std::string> failedEdits;  // allocations whose update failed (guarded by noteMu)
  std::mutex noteMu;
  auto note = [&](const Status& st) {
    std::lock_guard l(noteMu);
    if (!st && firstError) firstError = st;
  };
  const std::string nowText = kube::formatTime(now);
  // One update per allocation, carrying every edit the plan has for it.
  using Edit = std::function<void(Json&)>;
  std::map<std::string, std::vector<Edit>> edits;
  for (const auto& entry : plan.annotate) {
    if (!byName.count(entry.first)) continue;
    std::optional<std::string> value = entry.second;
    edits[entry.first].push_back([value](Json& o) {
      JsonValue& ann = kube::ensureObject(o["metadata"], "annotations", o.GetAllocator());
      if (value) kube::setString(ann, kAnnHealthySince, *value, o.GetAllocator());
      else kube::removeMember(ann, kAnnHealthySince);
    });
  }
  for (const auto& name : plan.markFailedAt) {
    if (!byName.count(name)) continue;
    edits[name].push_back([nowText](Json& o) {
      kube::setString(kube::ensureObject(o["metadata"], "annotations", o.GetAllocator()), kAnnFailedAt, nowText, o.GetAllocator());
    });
  }
  auto applyEdits = [&] {
    std::vector<std::pair<const std::string*, std::vector<Edit>*>> list;
    list.reserve(edits.size());
    for (auto& [name, es] : edits) list.emplace_back(&name, &es);
    parallelFor(list.size(), [&](size_t i) {
      Status st = updateAlloc(byName.at(*list[i].first), [&](Json& o) {
        for (const auto& e : *list[i].second) e(o);
      });
      if (!st) {
        std::lock_guard l(noteMu);
        failedEdits.insert(*list[i].first);
      }
      note(st);
    });
    edits.clear();
  };
  applyEdits();
  if (!firstError) return firstError;  // annotations changed resourceVersions: start over from the cache
  std::set<std::string> stopped;
  const Edit stopEdit = [](Json& o) { kube::setString(o["spec"], "desiredState", "stop", o.GetAllocator()); };
  for (const auto& name : plan.stop) {
    if (byName.count(name) && stopped.insert(name).second) edits[name].push_back(stopEdit);
  }
  for (const auto& name : plan.uncanary) {
    if (stopped.count(name) || !byName.count(name)) continue;
    edits[name].push_back([](Json& o) { kube::setMember(o["spec"], "canary", JsonValue(false), o.GetAllocator()); });
  }
  applyEdits();
  // Stop first: a placement that replaces an allocation is created only once that allocation is
  // asked to stop, by this reconcile's write or an earlier one (or has ended, or is gone).
  auto replacedIsStopped = [&](const std::string& name) {
    auto it = byName.find(name);
    if (it == byName.end()) return true;
    if (stopped.count(name)) return failedEdits.count(name) == 0;
    std::string phase = kube::getString(*it->second, {"status", "phase"});
    return kube::getString(*it->second, {"spec", "desiredState"}, "run") == "stop" || phase == "Succeeded" ||
           phase == "Failed" || phase == "Lost";
  };
  // One Event per reason, not per allocation: suspending 1,000 allocations is one decision.
  std::map<std::string, std::vector<std::string>> stopsByReason;
  for (const auto& name : stopped) {
    if (failedEdits.count(name)) continue;
    auto r = plan.stopReasons.find(name);
    stopsByReason[r == plan.stopReasons.end() ? "stopped" : r->second].push_back(name);
  }
  for (const auto& [why, names] : stopsByReason) {
    std::string list;
    for (size_t i = 0; i < names.size() && i < 3; ++i) list += (i ? ", " : "") + names[i];
    if (names.size() > 3) list += ", ...";
    event(*job, {false, "Stopping", "stopping " + std::to_string(names.size()) + " allocation" + (names.size() > 1 ? "s" : "") +
                                        " (" + list + "): " + why});
  }
  for (const auto& name : plan.remove) {
    auto it = byName.find(name);
    if (it == byName.end()) continue;
    kube::DeleteOptions d;
    d.preconditionUid = kube::uid(*it->second);
    auto r = ctx_.client->remove(kAllocations.withNamespace(ns).withName(name), d);
    if (!r && r.status().code() != 404) note(r.status());
  }

  // Placements.
  std::map<std::string, std::pair<int, std::string>> unplaced;
  bool waitingForStop = false;
  const int64_t version = kube::getInt(plan.status, {"currentVersion"}).value_or(0);
  const JsonValue* groupsJson = kube::find(*job, {"spec", "groups"});
  if (!plan.place.empty()) {
    struct Create {
      Json obj;
      const PlaceRequest* req;
      Status result;
    };
    std::vector<Create> toCreate;
    std::vector<std::string> preempt;
    {
      std::lock_guard l(placementMu_);
      // What this reconcile stopped stays in state_, holding its resources until the informer's
      // copy says it is terminal (allocInfoOf); marked stopping now, so that it is no preemption
      // victim meanwhile.
      for (const auto& name : stopped) {
        const scheduler::AllocInfo* held = failedEdits.count(name) ? nullptr : state_.alloc(ns + "/" + name);
        if (held == nullptr || held->stopping) continue;
        scheduler::AllocInfo copy = *held;
        copy.stopping = true;
        state_.addAlloc(std::move(copy));  // replaces the entry of the same uid
      }
      for (const auto& pr : plan.place) {
        // Its stop failed (a conflict, the API server away): the next reconcile tries both again.
        if (!pr.replaces.empty() && !replacedIsStopped(pr.replaces)) continue;
        const GroupSpec* g = spec.group(pr.group);
        const JsonValue* gj = nullptr;
        for (const auto& x : groupsJson->GetArray()) if (kube::getString(x, {"name"}) == pr.group) gj = &x;
        if (g == nullptr || gj == nullptr) continue;
        scheduler::PlacementRequest req = g->request;
        req.penaltyWorkers = pr.penaltyWorkers;
        std::string name = allocName(jobName, g->name, pr.slot, spec.isSystem(), pr.attempt);
        const std::string key = ns + "/" + name;
        auto t0 = std::chrono::steady_clock::now();
        scheduler::PlacementResult res =
            pr.targetWorker.empty() ? scheduler_->place(req, key) : scheduler_->placeOn(req, key, pr.targetWorker);
        placementLatency_->observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        if (auto* fail = std::get_if<scheduler::PlacementFailure>(&res)) {
          if (!pr.replaces.empty() && state_.alloc(ns + "/" + pr.replaces) != nullptr) {
            // The allocation it replaces still holds its resources while it stops: its terminal
            // report requeues this Job; only a replacement that does not fit then is unplaced.
            waitingForStop = true;
            continue;
          }
          placementFailures_->inc();
          auto& u = unplaced[pr.group];
          u.first++;
          u.second = fail->message();
          continue;
        }
        const auto& placement = std::get<scheduler::Placement>(res);
        for (const auto& victim : placement.preempted) preempt.push_back(victim);
        toCreate.push_back({buildAllocation(*job, spec, *g, *gj, pr, placement, version), &pr, Status::ok()});
      }
    }
    for (const auto& victim : preempt) {
      JsonPtr v = ctx_.informers.allocations->get(victim);
      if (!v) continue;
      note(updateAlloc(v, [](Json& o) { kube::setString(o["spec"], "desiredState", "stop", o.GetAllocator()); }));
      event(*job, {false, "Preempted", "stopping lower-priority allocation " + victim + " to make room"});
    }
    {
      std::vector<const JsonValue*> objs;
      objs.reserve(toCreate.size());
      for (const auto& c : toCreate) objs.push_back(&c.obj);
      std::vector<Status> results = ctx_.client->createMany(kAllocations.withNamespace(ns), objs);
      for (size_t i = 0; i < toCreate.size(); ++i) toCreate[i].result = std::move(results[i]);
    }
    for (auto& c : toCreate) {
      std::string name = kube::name(c.obj), worker = kube::getString(c.obj, {"spec", "workerName"});
      if (!c.result && c.result.code() != 409) {
        std::lock_guard l(placementMu_);
        state_.removeAlloc(ns + "/" + name);
        note(c.result);
        continue;
      }
      if (!c.result) continue;  // AlreadyExists: a previous attempt (or another writer) made it
      placements_->inc();
      const PlaceRequest* pr = c.req;
      if (!pr->replaces.empty()) {
        event(*job, {false, "Replaced", "allocation " + name + " on " + worker + " replaces " + pr->replaces});
      } else if (!pr->previous.empty()) {
        event(*job, {false, "Rescheduled", "allocation " + name + " on " + worker + " replaces failed " + pr->previous});
      } else {
        event(*job, {false, "Placed", "allocation " + name + " placed on " + worker + (pr->canary ? " (canary)" : "")});
      }
    }
  }

  // Status, last, only when it changed.
  finishStatus(plan.status, unplaced, gen, now);
  const JsonValue* oldStatus = kube::find(*job, {"status"});
  const JsonValue* oldProg = oldStatus ? condition(*oldStatus, "Progressing") : nullptr;
  const JsonValue* newProg = condition(plan.status, "Progressing");
  if (!unplaced.empty() && newProg &&
      !(oldProg && kube::getString(*oldProg, {"reason"}) == "Unschedulable" &&
        kube::getString(*oldProg, {"message"}) == kube::getString(*newProg, {"message"}))) {
    for (const auto& [g, u] : unplaced) event(*job, {true, "FailedScheduling", "group " + g + ": " + u.second});
  }
  for (const auto& e : plan.events) event(*job, e);
  JsonPtr current = job;
  if (oldStatus == nullptr || canonicalJson(*oldStatus) != canonicalJson(plan.status)) {
    Json copy = kube::cloneJson(*job);
    kube::setMember(copy, "status", JsonValue(plan.status, copy.GetAllocator()), copy.GetAllocator());
    auto r = ctx_.client->updateStatus(kJobs.withNamespace(ns), copy);
    if (!r) return r.status();
    current = kube::shareJson(std::move(*r));
  }
  if (plan.specUpdate) {
    Json copy = kube::cloneJson(*current);
    kube::setMember(copy, "spec", JsonValue(*plan.specUpdate, copy.GetAllocator()), copy.GetAllocator());
    auto r = ctx_.client->update(kJobs.withNamespace(ns), copy);
    if (!r) return r.status();
  }
  if (plan.deleteJob) {
    kube::DeleteOptions d;
    d.preconditionUid = jobUid;
    d.propagationPolicy = "Background";
    auto r = ctx_.client->remove(kJobs.withNamespace(ns).withName(jobName), d);
    if (!r && r.status().code() != 404) return r.status();
    event(*job, {false, "Deleted", "ttlSecondsAfterFinished passed"});
  }
  if (!firstError) return firstError;
  Result res;
  if (plan.requeueAfter) res.requeueAfter = std::chrono::duration_cast<std::chrono::milliseconds>(*plan.requeueAfter);
  if (!unplaced.empty() || waitingForStop) res.backoff = true;
  return res;
}

}  // namespace op
