#include "operator/job/job_plan.h"

#include <algorithm>
#include <sstream>

#include "kube/timeutil.h"

namespace op {

using kube::Json;
using kube::JsonValue;

namespace {

// Versions come back from the status, which anyone with access may have edited: keep arithmetic
// on them far from overflow.
int64_t clampVersion(int64_t v) { return std::clamp<int64_t>(v, 0, int64_t{1} << 52); }

int64_t unixSeconds(TimePoint t) { return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count(); }

std::optional<TimePoint> timeAt(const JsonValue& v, std::initializer_list<std::string_view> path) {
  std::string s = kube::getString(v, path);
  if (s.empty()) return std::nullopt;
  return kube::parseTime(s);
}

std::string annotation(const JsonValue& o, const char* key) { return kube::getString(o, {"metadata", "annotations", key}); }

bool mainTasksHealthy(const JsonValue& alloc, bool needReady) {
  const JsonValue* spec = kube::find(alloc, {"spec", "tasks"});
  const JsonValue* st = kube::find(alloc, {"status", "tasks"});
  if (spec == nullptr || !spec->IsArray() || st == nullptr || !st->IsArray()) return false;
  for (const auto& t : spec->GetArray()) {
    if (kube::find(t, {"lifecycle"}) != nullptr) continue;  // hooks do not gate health
    std::string n = kube::getString(t, {"name"});
    bool ok = false;
    for (const auto& s : st->GetArray()) {
      if (kube::getString(s, {"name"}) != n) continue;
      ok = kube::getString(s, {"state"}) == "Running" && (!needReady || kube::getBool(s, {"ready"}));
    }
    if (!ok) return false;
  }
  return true;
}

// Per-group counts for status.groups[].
struct Counts {
  int desired = 0, placed = 0, running = 0, healthy = 0, failed = 0, complete = 0, lost = 0, canaries = 0;
};

struct Versions {
  struct Entry {
    int64_t version = 0;
    std::string hash;
    const JsonValue* json = nullptr;
  };
  std::vector<Entry> entries;  // oldest first
  const Entry* find(int64_t v) const {
    for (const auto& e : entries) if (e.version == v) return &e;
    return nullptr;
  }
};

void stopFor(Plan& p, const std::string& name, const std::string& why) {
  p.stop.push_back(name);
  p.stopReasons.emplace(name, why);
}

// A slot's newest allocation is of an older template and was asked to stop: an update of the
// slot began (stop first) and its replacement may not exist yet. `v` is newest first.
bool stoppedForUpdate(const std::vector<const AllocView*>& v, const GroupSpec& g) {
  return !v.empty() && v.front()->stopRequested && !v.front()->migrate && v.front()->hash != g.hash;
}

void minRequeue(Plan& p, int64_t seconds) {
  seconds = std::max<int64_t>(seconds, 1);
  if (!p.requeueAfter || p.requeueAfter->count() > seconds) p.requeueAfter = std::chrono::seconds(seconds);
}

// The Job's spec with the template of a kept version (groups, constraints, affinities, spread),
// keeping the current counts, and without rollbackTo: what a rollback or a revert writes.
Json specWithTemplate(const JsonValue& spec, const JsonValue& tmpl) {
  Json sp;
  auto& a = sp.GetAllocator();
  sp.CopyFrom(spec, a);
  kube::removeMember(sp, "rollbackTo");
  std::map<std::string, std::pair<std::optional<int64_t>, std::optional<int64_t>>> scale;
  if (const JsonValue* gs = kube::find(sp, {"groups"}); gs && gs->IsArray()) {
    for (const auto& g : gs->GetArray()) {
      scale[kube::getString(g, {"name"})] = {kube::getInt(g, {"count"}), kube::getInt(g, {"completions"})};
    }
  }
  for (const char* f : {"groups", "constraints", "affinities", "spread"}) kube::removeMember(sp, f);
  if (tmpl.IsObject()) {
    for (const auto& m : tmpl.GetObject()) sp.AddMember(JsonValue(m.name, a), JsonValue(m.value, a), a);
  }
  if (JsonValue* gs = kube::find(sp, {"groups"}); gs && gs->IsArray()) {
    for (auto& g : gs->GetArray()) {
      auto it = scale.find(kube::getString(g, {"name"}));
      if (it == scale.end() || !g.IsObject()) continue;
      if (it->second.first) kube::setMember(g, "count", JsonValue(*it->second.first), a);
      if (it->second.second) kube::setMember(g, "completions", JsonValue(*it->second.second), a);
    }
  }
  return sp;
}

}  // namespace

AllocView viewOf(const kube::JsonPtr& alloc, const JobSpec& spec) {
  AllocView v;
  const JsonValue& o = *alloc;
  v.obj = alloc;
  v.name = kube::name(o);
  v.uid = kube::uid(o);
  v.group = kube::getString(o, {"spec", "groupName"});
  if (v.group.empty()) v.group = kube::getString(o, {"metadata", "labels", kLabelGroup});
  v.worker = kube::getString(o, {"spec", "workerName"});
  v.slot = annotation(o, kAnnSlot);
  if (v.slot.empty()) v.slot = spec.isSystem() ? v.worker : std::to_string(kube::getInt(o, {"spec", "index"}).value_or(0));
  std::string att = annotation(o, kAnnAttempt);
  v.attempt = att.empty() ? 0 : std::atoi(att.c_str());
  v.version = kube::getInt(o, {"spec", "jobVersion"}).value_or(0);
  v.hash = annotation(o, kAnnHash);
  v.phase = kube::getString(o, {"status", "phase"});
  v.stopRequested = kube::getString(o, {"spec", "desiredState"}, "run") == "stop";
  v.migrate = kube::getBool(o, {"spec", "migrate"});
  v.canary = kube::getBool(o, {"spec", "canary"});
  const GroupSpec* g = spec.group(v.group);
  std::string check = g ? g->update.healthCheck : "checks";
  v.healthyNow = v.phase == "Running" && check != "manual" && mainTasksHealthy(o, check == "checks");
  if (std::string hs = annotation(o, kAnnHealthySince); !hs.empty()) v.healthySince = kube::parseTime(hs);
  v.failedAt = timeAt(o, {"status", "finishedAt"});
  if (!v.failedAt) {
    if (std::string fa = annotation(o, kAnnFailedAt); !fa.empty()) v.failedAt = kube::parseTime(fa);
  }
  v.created = timeAt(o, {"metadata", "creationTimestamp"}).value_or(TimePoint{});
  std::string rs = annotation(o, kAnnReschedules);
  std::stringstream ss(rs);
  for (std::string part; std::getline(ss, part, ',');) {
    if (!part.empty()) v.reschedules.push_back(std::clamp<int64_t>(std::atoll(part.c_str()), 0, int64_t{1} << 40));
  }
  return v;
}

std::string allocName(const std::string& job, const std::string& group, const std::string& slot, bool systemSlot,
                      int attempt) {
  std::string slotToken = systemSlot ? "w" + hashHex(slot).substr(0, 10) : slot;
  std::string n = job + "-" + group + "-" + slotToken + "-" + std::to_string(attempt);
  if (n.size() > 253) {
    std::string h = hashHex(job + "/" + group).substr(0, 10);
    n = job.substr(0, 200) + "-" + h + "-" + slotToken + "-" + std::to_string(attempt);
  }
  return n;
}

const JsonValue* condition(const JsonValue& status, const std::string& type) {
  const JsonValue* cs = kube::find(status, {"conditions"});
  if (cs == nullptr || !cs->IsArray()) return nullptr;
  for (const auto& c : cs->GetArray()) {
    if (kube::getString(c, {"type"}) == type) return &c;
  }
  return nullptr;
}

void setCondition(Json& status, const std::string& type, bool value, const std::string& reason,
                  const std::string& message, int64_t generation, TimePoint now) {
  auto& a = status.GetAllocator();
  JsonValue* cs = kube::find(status, {"conditions"});
  if (cs == nullptr || !cs->IsArray()) {
    kube::setMember(status, "conditions", JsonValue(rapidjson::kArrayType), a);
    cs = kube::find(status, {"conditions"});
  }
  std::string st = value ? "True" : "False";
  JsonValue* existing = nullptr;
  for (auto& c : cs->GetArray()) {
    if (kube::getString(c, {"type"}) == type) existing = &c;
  }
  std::string transition = kube::formatTime(now);
  if (existing != nullptr && kube::getString(*existing, {"status"}) == st) {
    transition = kube::getString(*existing, {"lastTransitionTime"}, transition);
  }
  JsonValue c(rapidjson::kObjectType);
  kube::setString(c, "type", type, a);
  kube::setString(c, "status", st, a);
  c.AddMember("observedGeneration", generation, a);
  kube::setString(c, "lastTransitionTime", transition, a);
  kube::setString(c, "reason", reason, a);
  kube::setString(c, "message", message.substr(0, 32000), a);
  if (existing != nullptr) {
    *existing = std::move(c);
  } else {
    cs->PushBack(std::move(c), a);
  }
}

Json invalidStatus(const JsonValue& job, const std::string& message, TimePoint now) {
  Json st(rapidjson::kObjectType);
  auto& a = st.GetAllocator();
  if (const JsonValue* old = kube::find(job, {"status"}); old && old->IsObject()) st.CopyFrom(*old, a);
  int64_t gen = kube::getInt(job, {"metadata", "generation"}).value_or(0);
  kube::setMember(st, "observedGeneration", JsonValue(gen), a);
  kube::setString(st, "phase", "Invalid", a);
  setCondition(st, "InvalidSpec", true, "InvalidSpec", message, gen, now);
  return st;
}

Plan planJob(const PlanInput& in) {
  Plan p;
  const Json& job = *in.job;
  const JobSpec& spec = *in.spec;
  Json& status = p.status;
  auto& a = status.GetAllocator();
  if (const JsonValue* old = kube::find(job, {"status"}); old && old->IsObject()) status.CopyFrom(*old, a);
  const int64_t gen = kube::getInt(job, {"metadata", "generation"}).value_or(0);
  const TimePoint now = in.now;
  const std::string nowText = kube::formatTime(now);
  kube::setMember(status, "observedGeneration", JsonValue(gen), a);
  if (condition(status, "InvalidSpec")) setCondition(status, "InvalidSpec", false, "Valid", "", gen, now);
  const bool batch = spec.isBatch();

  // ---- versions ---------------------------------------------------------------------------
  Versions versions;
  if (const JsonValue* vs = kube::find(status, {"versions"}); vs && vs->IsArray()) {
    for (const auto& v : vs->GetArray()) {
      versions.entries.push_back({clampVersion(kube::getInt(v, {"version"}).value_or(0)), kube::getString(v, {"hash"}), &v});
    }
  }
  std::optional<int64_t> current = kube::getInt(status, {"currentVersion"});
  if (current) current = clampVersion(*current);
  std::optional<int64_t> stable = kube::getInt(status, {"stableVersion"});
  const Versions::Entry* curEntry = current ? versions.find(*current) : nullptr;
  bool newVersion = curEntry == nullptr || curEntry->hash != spec.templateHash;
  if (newVersion) {
    int64_t v = 0;
    for (const auto& e : versions.entries) v = std::max(v, e.version + 1);
    if (current) v = std::max(v, *current + 1);
    JsonValue entry(rapidjson::kObjectType);
    entry.AddMember("version", v, a);
    kube::setString(entry, "hash", spec.templateHash, a);
    kube::setString(entry, "createdAt", nowText, a);
    Json tmpl = templateOf(*kube::find(job, {"spec"}));
    entry.AddMember("template", JsonValue(tmpl, a), a);
    JsonValue* vs = kube::find(status, {"versions"});
    if (vs == nullptr || !vs->IsArray()) {
      kube::setMember(status, "versions", JsonValue(rapidjson::kArrayType), a);
      vs = kube::find(status, {"versions"});
    }
    vs->PushBack(std::move(entry), a);
    // Revision limit: keep the newest revisionHistoryLimit old versions, and the stable one.
    while (static_cast<int>(vs->Size()) > spec.revisionHistoryLimit + 1) {
      rapidjson::SizeType drop = 0;
      while (drop + 1 < vs->Size() && stable && kube::getInt((*vs)[drop], {"version"}) == stable) ++drop;
      vs->Erase(vs->Begin() + drop);
    }
    kube::setMember(status, "currentVersion", JsonValue(v), a);
    if (!batch) {
      JsonValue d(rapidjson::kObjectType);
      d.AddMember("version", v, a);
      kube::setString(d, "state", "Running", a);
      kube::setString(d, "message", v == 0 ? "initial placement" : "rolling out version " + std::to_string(v), a);
      d.AddMember("promoted", false, a);
      kube::setString(d, "startedAt", nowText, a);
      kube::setMember(status, "deployment", std::move(d), a);
      if (v > 0) p.events.push_back({false, "RolloutStarted", "rolling out job version " + std::to_string(v)});
    }
    current = v;
    // Re-read the entries (the array may have moved).
    versions.entries.clear();
    for (const auto& e : kube::find(status, {"versions"})->GetArray()) {
      versions.entries.push_back({kube::getInt(e, {"version"}).value_or(0), kube::getString(e, {"hash"}), &e});
    }
  }
  const int64_t V = *current;

  // ---- rollback request ------------------------------------------------------------------
  if (spec.rollbackTo) {
    const Versions::Entry* target = versions.find(*spec.rollbackTo);
    const JsonValue* tmpl = target ? kube::find(*target->json, {"template"}) : nullptr;
    if (tmpl == nullptr) {
      Json sp;
      sp.CopyFrom(*kube::find(job, {"spec"}), sp.GetAllocator());
      kube::removeMember(sp, "rollbackTo");
      p.specUpdate = std::move(sp);
      p.events.push_back({true, "RollbackFailed", "rollbackTo: version " + std::to_string(*spec.rollbackTo) + " is not kept"});
    } else {
      p.specUpdate = specWithTemplate(*kube::find(job, {"spec"}), *tmpl);
      p.events.push_back({false, "RollbackStarted", "rolling back to the template of version " + std::to_string(*spec.rollbackTo)});
    }
    return p;
  }

  // ---- index the allocations -----------------------------------------------------------
  // An allocation on a Worker that no longer exists runs nowhere: it counts as Lost (the worker
  // lifecycle controller does the same for workers that stop renewing their Lease).
  std::vector<AllocView> allocs = in.allocs;
  for (auto& al : allocs) {
    if (!al.terminal() && !in.workers.count(al.worker)) al.phase = "Lost";
  }
  std::map<std::string, std::map<std::string, std::vector<const AllocView*>>> bySlot;  // group -> slot -> newest first
  for (const auto& al : allocs) {
    if (spec.group(al.group) == nullptr) {
      // A group that no longer exists: stop what runs, clear what ended.
      if (al.live()) stopFor(p, al.name, "its group was removed from the Job");
      else if (al.terminal()) p.remove.push_back(al.name);
      continue;
    }
    bySlot[al.group][al.slot].push_back(&al);
  }
  for (auto& [g, slots] : bySlot) {
    for (auto& [s, v] : slots) std::sort(v.begin(), v.end(), [](auto* x, auto* y) { return x->attempt > y->attempt; });
  }

  // Health annotations: record when an allocation was first seen healthy, clear when it is not.
  for (const auto& al : allocs) {
    if (al.healthyNow && !al.healthySince && !al.stopRequested) p.annotate[al.name] = nowText;
    if (!al.healthyNow && al.healthySince) p.annotate[al.name] = std::nullopt;
    if (al.failed() && !al.failedAt) p.markFailedAt.push_back(al.name);
  }
  auto healthyFor = [&](const AllocView& al, const GroupSpec& g) {
    if (!al.healthyNow || !al.healthySince) return false;
    auto since = std::chrono::duration_cast<std::chrono::seconds>(now - *al.healthySince).count();
    if (since >= g.update.minHealthySeconds) return true;
    minRequeue(p, g.update.minHealthySeconds - since);
    return false;
  };

  // ---- suspend ---------------------------------------------------------------------------
  int totalDesired = 0, totalRunning = 0, totalHealthy = 0;
  JsonValue groupsStatus(rapidjson::kArrayType);
  auto writeGroup = [&](const std::string& name, const Counts& c) {
    JsonValue g(rapidjson::kObjectType);
    kube::setString(g, "name", name, a);
    g.AddMember("desired", c.desired, a);
    g.AddMember("placed", c.placed, a);
    g.AddMember("running", c.running, a);
    g.AddMember("healthy", c.healthy, a);
    g.AddMember("failed", c.failed, a);
    g.AddMember("complete", c.complete, a);
    g.AddMember("lost", c.lost, a);
    g.AddMember("canaries", c.canaries, a);
    g.AddMember("unplaced", 0, a);
    groupsStatus.PushBack(std::move(g), a);
    totalDesired += c.desired;
    totalRunning += c.running;
    totalHealthy += c.healthy;
  };
  auto countAlloc = [&](Counts& c, const AllocView& al, const GroupSpec& g) {
    if (al.live() && al.hash == g.hash) c.placed++;
    if (al.live() && al.phase == "Running") c.running++;
    if (al.live() && al.healthyNow) c.healthy++;
    if (al.failed() && al.phase == "Failed") c.failed++;
    if (al.failed() && al.phase == "Lost") c.lost++;
    if (al.phase == "Succeeded" && !al.stopRequested) c.complete++;
    if (al.live() && al.canary) c.canaries++;
  };
  auto finish = [&](const std::string& phase) {
    kube::setMember(status, "groups", std::move(groupsStatus), a);
    kube::setMember(status, "desired", JsonValue(totalDesired), a);
    kube::setMember(status, "running", JsonValue(totalRunning), a);
    kube::setMember(status, "healthy", JsonValue(totalHealthy), a);
    kube::setString(status, "phase", phase, a);
  };

  if (spec.suspend || spec.periodic) {
    // A periodic Job is a template for its runs (child Jobs, the periodic controller's); it places
    // nothing itself. A suspended one stops everything.
    for (const auto& al : allocs) {
      if (al.live()) stopFor(p, al.name, spec.suspend ? "the Job is suspended" : "a periodic Job runs in child Jobs");
    }
    for (const auto& g : spec.groups) {
      Counts c;
      for (const auto& [s, v] : bySlot[g.name]) for (auto* al : v) countAlloc(c, *al, g);
      writeGroup(g.name, c);
    }
    if (spec.suspend) setCondition(status, "Progressing", false, "Suspended", "the Job is suspended", gen, now);
    finish(spec.suspend ? "Suspended" : "Running");
    return p;
  }

  // ---- batch and sysbatch: run to completion -------------------------------------------
  if (batch) {
    std::optional<TimePoint> start = timeAt(status, {"startTime"});
    if (!start) {
      start = now;
      kube::setString(status, "startTime", nowText, a);
    }
    const JsonValue* completeCond = condition(status, "Complete");
    const JsonValue* failedCond = condition(status, "Failed");
    bool done = (completeCond && kube::getString(*completeCond, {"status"}) == "True") ||
                (failedCond && kube::getString(*failedCond, {"status"}) == "True");
    int failures = 0;
    for (const auto& al : allocs) failures += al.failed() ? 1 : 0;
    std::string failReason, failMessage;
    if (!done && failures > spec.backoffLimit) {
      failReason = "BackoffLimitExceeded";
      failMessage = std::to_string(failures) + " allocations failed (backoffLimit " + std::to_string(spec.backoffLimit) + ")";
    }
    if (!done && failReason.empty() && spec.activeDeadlineSeconds) {
      auto elapsed = std::chrono::duration_cast<std::chrono::seconds>(now - *start).count();
      if (elapsed >= *spec.activeDeadlineSeconds) {
        failReason = "DeadlineExceeded";
        failMessage = "the Job ran longer than activeDeadlineSeconds (" + std::to_string(*spec.activeDeadlineSeconds) + ")";
      } else {
        minRequeue(p, *spec.activeDeadlineSeconds - elapsed);
      }
    }
    bool allDone = true;
    for (const auto& g : spec.groups) {
      Counts c;
      std::vector<std::string> slots;
      if (spec.type == "sysbatch") {
        for (const auto& w : in.eligible.count(g.name) ? in.eligible.at(g.name) : std::set<std::string>{}) slots.push_back(w);
        for (const auto& [s, v] : bySlot[g.name]) {
          if (std::find(slots.begin(), slots.end(), s) == slots.end()) slots.push_back(s);
        }
      } else {
        for (int i = 0; i < g.completions; ++i) slots.push_back(std::to_string(i));
      }
      int liveCount = 0;
      for (const auto& [s, v] : bySlot[g.name]) for (auto* al : v) { countAlloc(c, *al, g); liveCount += al->live() ? 1 : 0; }
      c.desired = spec.type == "sysbatch" ? static_cast<int>(slots.size()) : g.completions;
      int parallel = spec.type == "sysbatch" ? INT32_MAX : g.count;
      for (const auto& slot : slots) {
        auto it = bySlot[g.name].find(slot);
        const std::vector<const AllocView*> empty;
        const auto& v = it == bySlot[g.name].end() ? empty : it->second;
        bool succeeded = std::any_of(v.begin(), v.end(), [](auto* x) { return x->phase == "Succeeded" && !x->stopRequested; });
        bool live = std::any_of(v.begin(), v.end(), [](auto* x) { return x->live(); });
        if (succeeded) continue;
        allDone = false;
        if (live || done || !failReason.empty()) continue;
        if (spec.type == "sysbatch" && !(in.eligible.count(g.name) && in.eligible.at(g.name).count(slot))) continue;
        if (liveCount >= parallel) continue;
        PlaceRequest pr;
        pr.group = g.name;
        pr.slot = slot;
        pr.index = spec.type == "sysbatch" ? 0 : std::atoi(slot.c_str());
        pr.attempt = v.empty() ? 0 : v.front()->attempt + 1;
        if (spec.type == "sysbatch") pr.targetWorker = slot;
        if (!v.empty() && v.front()->failed()) {
          const AllocView& last = *v.front();
          if (!last.failedAt) continue;  // failed-at is being recorded; decide next time
          auto delay = g.reschedule.delayFor(last.reschedules.size());
          auto due = *last.failedAt + std::chrono::seconds(delay);
          if (due > now) {
            minRequeue(p, std::chrono::duration_cast<std::chrono::seconds>(due - now).count() + 1);
            continue;
          }
          pr.previous = last.name;
          if (!last.worker.empty()) pr.penaltyWorkers.push_back(last.worker);
          pr.reschedules = last.reschedules;
          pr.reschedules.push_back(unixSeconds(now));
        }
        p.place.push_back(std::move(pr));
        liveCount++;
      }
      writeGroup(g.name, c);
    }
    if (!failReason.empty()) {
      for (const auto& al : allocs) if (al.live()) stopFor(p, al.name, "the Job failed: " + failReason);
      setCondition(status, "Failed", true, failReason, failMessage, gen, now);
      setCondition(status, "Complete", false, failReason, failMessage, gen, now);
      kube::setString(status, "completionTime", nowText, a);
      p.events.push_back({true, failReason, failMessage});
      done = true;
    } else if (allDone && !done) {
      setCondition(status, "Complete", true, "Completed", "every allocation completed", gen, now);
      kube::setString(status, "completionTime", nowText, a);
      p.events.push_back({false, "Completed", "the Job completed"});
      done = true;
    }
    bool failed = (failedCond && kube::getString(*failedCond, {"status"}) == "True") || !failReason.empty();
    if (done && spec.ttlSecondsAfterFinished) {
      auto fin = timeAt(status, {"completionTime"}).value_or(now);
      auto left = *spec.ttlSecondsAfterFinished - std::chrono::duration_cast<std::chrono::seconds>(now - fin).count();
      if (left <= 0) p.deleteJob = true;
      else minRequeue(p, left);
    }
    if (!done) setCondition(status, "Progressing", true, "Running", "allocations are running", gen, now);
    else if (condition(status, "Progressing")) setCondition(status, "Progressing", false, failed ? "Failed" : "Completed", "", gen, now);
    finish(done ? (failed ? "Failed" : "Complete") : (totalRunning > 0 ? "Running" : "Pending"));
    return p;
  }

  // ---- service and system: keep running, roll out versions ------------------------------
  JsonValue* dep = kube::find(status, {"deployment"});
  std::string depState = dep ? kube::getString(*dep, {"state"}) : "";
  const bool depActive = dep && kube::getInt(*dep, {"version"}) == V && (depState == "Running" || depState == "Paused");
  const bool depFailed = dep && kube::getInt(*dep, {"version"}) == V && (depState == "Failed" || depState == "Reverted");
  TimePoint depStart = dep ? timeAt(*dep, {"startedAt"}).value_or(now) : now;
  bool promoted = dep && kube::getBool(*dep, {"promoted"});
  bool anyOld = false;
  for (const auto& al : allocs) {
    const GroupSpec* g = spec.group(al.group);
    if (g && al.live() && al.hash != g->hash) anyOld = true;
  }

  // Canaries: promoted by the user, or automatically once all are healthy.
  bool wantsCanary = false, allCanariesHealthy = true, anyCanary = false;
  for (const auto& g : spec.groups) {
    if (g.update.canary > 0) wantsCanary = true;
  }
  for (const auto& al : allocs) {
    const GroupSpec* g = spec.group(al.group);
    if (g == nullptr || !al.live() || !al.canary || al.hash != g->hash) continue;
    anyCanary = true;
    if (!healthyFor(al, *g)) allCanariesHealthy = false;
  }
  if (depActive && !promoted && wantsCanary) {
    bool autoPromote = std::any_of(spec.groups.begin(), spec.groups.end(), [](const auto& g) { return g.update.autoPromote; });
    if ((spec.promoteVersion && *spec.promoteVersion == V) || (autoPromote && anyCanary && allCanariesHealthy)) {
      promoted = true;
      kube::setMember(*dep, "promoted", JsonValue(true), a);
      p.events.push_back({false, "RolloutPromoted", "canaries of version " + std::to_string(V) + " promoted"});
      for (const auto& al : allocs) if (al.live() && al.canary) p.uncanary.push_back(al.name);
    }
  }
  // The canary phase: an update with canaries, not promoted yet, while old allocations run.
  const bool canaryPhase = depActive && wantsCanary && !promoted && (anyOld || anyCanary);

  // Rollout failure: a new allocation failed or missed its healthy deadline, or no progress.
  // One healthy now but not recorded yet (this plan records it) is progress made while this
  // operator was away (restarting, or without the Lease): neither deadline may count that time.
  std::string failure;
  std::optional<TimePoint> lastProgress = depStart;
  if (depActive) {
    for (const auto& al : allocs) {
      const GroupSpec* g = spec.group(al.group);
      if (g == nullptr || al.hash != g->hash || al.created < depStart - std::chrono::seconds(1)) continue;
      if (al.failed() && al.phase == "Failed") failure = "allocation " + al.name + " failed";
      if (al.live() && al.healthyNow && !al.healthySince) lastProgress = now;
      if (al.live() && !al.healthySince && !al.healthyNow) {
        auto deadline = al.created + std::chrono::seconds(g->update.healthyDeadlineSeconds);
        if (now >= deadline) failure = "allocation " + al.name + " was not healthy within healthyDeadlineSeconds";
        else minRequeue(p, std::chrono::duration_cast<std::chrono::seconds>(deadline - now).count() + 1);
      }
      if (al.healthySince && *al.healthySince > *lastProgress) lastProgress = al.healthySince;
    }
    int progress = spec.groups.empty() ? 0 : spec.groups.front().update.progressDeadlineSeconds;
    if (failure.empty() && progress > 0 && depState == "Running") {
      auto deadline = *lastProgress + std::chrono::seconds(progress);
      if (now >= deadline) failure = "no allocation turned healthy within progressDeadlineSeconds";
      else minRequeue(p, std::chrono::duration_cast<std::chrono::seconds>(deadline - now).count() + 1);
    }
  }

  bool rolloutDone = true;
  for (const auto& g : spec.groups) {
    Counts c;
    std::vector<std::string> slots;
    std::set<std::string> desiredSlots;
    if (spec.isSystem()) {
      // Every eligible worker; plus workers that still exist and hold a live allocation of ours
      // (cordoned workers keep what runs there; drain moves it with spec.migrate).
      for (const auto& w : in.eligible.count(g.name) ? in.eligible.at(g.name) : std::set<std::string>{}) desiredSlots.insert(w);
      for (const auto& [s, v] : bySlot[g.name]) {
        bool liveHere = std::any_of(v.begin(), v.end(), [](auto* x) { return x->live() && !x->migrate; });
        if (liveHere && in.workers.count(s)) desiredSlots.insert(s);
      }
    } else {
      for (int i = 0; i < g.count; ++i) desiredSlots.insert(std::to_string(i));
    }
    slots.assign(desiredSlots.begin(), desiredSlots.end());
    std::sort(slots.begin(), slots.end(), [&](const std::string& x, const std::string& y) {
      if (spec.isSystem()) return x < y;
      return std::atoi(x.c_str()) < std::atoi(y.c_str());
    });
    c.desired = static_cast<int>(slots.size());
    for (const auto& [s, v] : bySlot[g.name]) for (auto* al : v) countAlloc(c, *al, g);

    // Updates in flight, the slots maxParallel bounds: those whose new allocation is not healthy
    // yet (while old ones remain), and those whose old allocation was stopped for the update and
    // have nothing live: the replacement is created right after the stop, so such a slot is seen
    // only when that create failed or the operator died between the two writes. It is counted
    // here, and its replacement below takes no budget of its own.
    int inFlight = 0;
    for (const auto& s : slots) {
      const auto& v = bySlot[g.name][s];
      bool anyLive = false, unhealthyNew = false;
      for (auto* al : v) {
        anyLive = anyLive || al->live();
        unhealthyNew = unhealthyNew || (al->live() && al->hash == g.hash && !healthyFor(*al, g));
      }
      if ((unhealthyNew && anyOld) || (!anyLive && stoppedForUpdate(v, g))) inFlight++;
    }
    int budget = g.update.maxParallel == 0 ? INT32_MAX : g.update.maxParallel - inFlight;
    if (!depActive || depFailed || !failure.empty()) budget = 0;
    int canariesWanted = canaryPhase ? g.update.canary : 0;

    // Slots no longer wanted (scale down, worker gone): stop what is live, clear what ended.
    for (const auto& [s, v] : bySlot[g.name]) {
      if (desiredSlots.count(s)) continue;
      for (auto* al : v) {
        if (al->live()) stopFor(p, al->name, "no longer wanted (scaled down, or its worker left)");
        else if (al->terminal()) p.remove.push_back(al->name);
      }
    }
    int slotNo = 0;
    for (const auto& slot : slots) {
      const int thisSlot = slotNo++;
      const auto& v = bySlot[g.name][slot];
      const AllocView* liveNew = nullptr;
      std::vector<const AllocView*> liveOld, migrating;
      for (auto* al : v) {
        if (!al->live()) continue;
        if (al->migrate) migrating.push_back(al);
        else if (al->hash == g.hash && liveNew == nullptr) liveNew = al;
        else if (al->hash == g.hash) stopFor(p, al->name, "a duplicate of a newer allocation of its slot");  // a duplicate: keep the newest
        else liveOld.push_back(al);
      }
      int nextAttempt = v.empty() ? 0 : v.front()->attempt + 1;
      // Terminal allocations superseded by a newer attempt are removed (the newest one stays: it
      // carries the reschedule history until it is replaced).
      for (size_t i = 1; i < v.size(); ++i) {
        if (v[i]->terminal()) p.remove.push_back(v[i]->name);
      }
      PlaceRequest pr;
      pr.group = g.name;
      pr.slot = slot;
      pr.index = spec.isSystem() ? 0 : std::atoi(slot.c_str());
      pr.attempt = nextAttempt;
      if (spec.isSystem()) pr.targetWorker = slot;
      if (liveNew != nullptr) {
        bool keepOld = canaryPhase && liveNew->canary;
        if (!keepOld) for (auto* o : liveOld) stopFor(p, o->name, "replaced by a new version");
        for (auto* m : migrating) stopFor(p, m->name, "migrated off its worker");
        if (!healthyFor(*liveNew, g) || (keepOld && !liveOld.empty())) rolloutDone = false;
        continue;
      }
      rolloutDone = false;
      if (!liveOld.empty()) {
        if (!migrating.empty()) for (auto* m : migrating) stopFor(p, m->name, "migrated off its worker");
        // An update of this slot.
        if (canaryPhase) {
          if (thisSlot < canariesWanted && budget > 0) {
            pr.canary = true;
            p.place.push_back(pr);
            budget--;
          }
          continue;
        }
        if (budget <= 0) continue;
        budget--;
        // Stop first: the replacement is created only once this stop is written, so the slot
        // never has two allocations that want to run.
        for (auto* o : liveOld) stopFor(p, o->name, "replaced by a new version");
        pr.replaces = liveOld.front()->name;
        pr.previous = pr.replaces;
        p.place.push_back(pr);
        continue;
      }
      if (!migrating.empty()) {
        // Drain: stop first, then a replacement elsewhere (system jobs: none, the worker leaves).
        if (spec.isSystem()) {
          for (auto* m : migrating) stopFor(p, m->name, "its worker is draining");
          continue;
        }
        for (auto* m : migrating) stopFor(p, m->name, "migrated off its draining worker");
        pr.replaces = migrating.front()->name;
        pr.penaltyWorkers.push_back(migrating.front()->worker);
        pr.previous = pr.replaces;
        p.place.push_back(pr);
        continue;
      }
      // Nothing live: first placement, or a reschedule after a failure or loss.
      if (spec.isSystem() && !(in.eligible.count(g.name) && in.eligible.at(g.name).count(slot))) continue;
      if (!v.empty() && v.front()->failed()) {
        const AllocView& last = *v.front();
        if (!last.failedAt) continue;
        const auto& pol = g.reschedule;
        if (!pol.unlimited) {
          int recent = 0;
          for (int64_t t : last.reschedules) recent += unixSeconds(now) - t < pol.intervalSeconds ? 1 : 0;
          if (recent >= pol.attempts) continue;  // out of attempts: the group stays degraded
        }
        auto due = *last.failedAt + std::chrono::seconds(pol.delayFor(last.reschedules.size()));
        if (due > now) {
          minRequeue(p, std::chrono::duration_cast<std::chrono::seconds>(due - now).count() + 1);
          continue;
        }
        pr.previous = last.name;
        if (!spec.isSystem() && !last.worker.empty()) pr.penaltyWorkers.push_back(last.worker);
        pr.reschedules = last.reschedules;
        pr.reschedules.push_back(unixSeconds(now));
        if (last.phase == "Lost" && !last.stopRequested) stopFor(p, last.name, "lost with its worker, replaced");
      } else if (!v.empty() && v.front()->stopRequested) {
        // Asked to stop while its slot is still wanted: the second half of a stop-first update or
        // migration (the create failed, or the operator died after the stop), or a preemption.
        // Its stop is already written, so the replacement may be created now.
        const AllocView& last = *v.front();
        pr.replaces = last.name;
        pr.previous = last.name;
        if (last.migrate && !last.worker.empty()) pr.penaltyWorkers.push_back(last.worker);
      }
      p.place.push_back(std::move(pr));
    }
    writeGroup(g.name, c);
  }

  // ---- deployment state -------------------------------------------------------------------
  if (dep && depState == "Reverted" && kube::getInt(*dep, {"version"}) == V && stable) {
    // The revert was decided (and recorded) but the spec write did not happen: write it again.
    const Versions::Entry* st = versions.find(*stable);
    if (st != nullptr && st->hash != spec.templateHash && kube::find(*st->json, {"template"})) {
      p.specUpdate = specWithTemplate(*kube::find(job, {"spec"}), *kube::find(*st->json, {"template"}));
    }
  }
  if (depActive) {
    if (!failure.empty()) {
      std::string msg = "version " + std::to_string(V) + " failed: " + failure;
      kube::setString(*dep, "state", "Failed", a);
      kube::setString(*dep, "message", msg, a);
      p.events.push_back({true, "RolloutFailed", msg});
      bool autoRevert = std::any_of(spec.groups.begin(), spec.groups.end(), [](const auto& g) { return g.update.autoRevert; });
      const Versions::Entry* st = stable ? versions.find(*stable) : nullptr;
      if (autoRevert && st != nullptr && st->hash != spec.templateHash && kube::find(*st->json, {"template"})) {
        kube::setString(*dep, "state", "Reverted", a);
        kube::setString(*dep, "message", msg + "; reverting to stable version " + std::to_string(*stable), a);
        p.events.push_back({true, "RolloutReverted", "reverting to stable version " + std::to_string(*stable) + " after " + failure});
        p.specUpdate = specWithTemplate(*kube::find(job, {"spec"}), *kube::find(*st->json, {"template"}));
        p.place.clear();  // the revert's own reconcile places
      }
    } else if (rolloutDone && !anyOld) {
      kube::setString(*dep, "state", "Successful", a);
      kube::setString(*dep, "message", "version " + std::to_string(V) + " is healthy", a);
      kube::setMember(status, "stableVersion", JsonValue(V), a);
      if (V > 0) p.events.push_back({false, "RolloutSucceeded", "version " + std::to_string(V) + " is healthy"});
    } else if (canaryPhase && p.place.empty() && anyCanary && !promoted) {
      kube::setString(*dep, "state", "Paused", a);
      kube::setString(*dep, "message", "canaries placed; set spec.promoteVersion: " + std::to_string(V) + " to continue", a);
    } else if (depState != "Running" && !canaryPhase) {
      kube::setString(*dep, "state", "Running", a);
    }
  }

  // ---- conditions ---------------------------------------------------------------------------
  std::string state = dep ? kube::getString(*dep, {"state"}) : "";
  bool available = true;
  for (const auto& gv : groupsStatus.GetArray()) {
    int desired = kube::getInt(gv, {"desired"}).value_or(0);
    int healthy = kube::getInt(gv, {"healthy"}).value_or(0);
    const GroupSpec* g = spec.group(kube::getString(gv, {"name"}));
    int slack = g && g->update.maxParallel > 0 ? g->update.maxParallel : 0;
    if (desired > 0 && healthy < std::max(1, desired - slack)) available = false;
  }
  setCondition(status, "Available", available, available ? "MinimumAllocationsAvailable" : "NotEnoughHealthy",
               std::to_string(totalHealthy) + "/" + std::to_string(totalDesired) + " allocations healthy", gen, now);
  if (state == "Running") {
    setCondition(status, "Progressing", true, "RolloutInProgress", dep ? kube::getString(*dep, {"message"}) : "", gen, now);
  } else if (state == "Paused") {
    setCondition(status, "Progressing", true, "CanaryAwaitingPromotion", kube::getString(*dep, {"message"}), gen, now);
  } else if (state == "Failed" || state == "Reverted") {
    setCondition(status, "Progressing", false, state == "Failed" ? "RolloutFailed" : "RolloutReverted", kube::getString(*dep, {"message"}), gen, now);
  } else {
    setCondition(status, "Progressing", true, "RolloutSuccessful", dep ? kube::getString(*dep, {"message"}) : "", gen, now);
  }
  std::string phase = state == "Running" || state == "Paused" ? (V > 0 ? "Deploying" : "Pending")
                      : totalHealthy < totalDesired            ? "Degraded"
                                                               : "Running";
  if ((state == "Running") && V == 0 && totalRunning > 0) phase = totalHealthy < totalDesired ? "Pending" : "Running";
  finish(phase);
  return p;
}

void finishStatus(Json& status, const std::map<std::string, std::pair<int, std::string>>& unplaced, int64_t generation,
                  TimePoint now) {
  auto& a = status.GetAllocator();
  std::string msg;
  int total = 0;
  if (JsonValue* gs = kube::find(status, {"groups"}); gs && gs->IsArray()) {
    for (auto& g : gs->GetArray()) {
      auto it = unplaced.find(kube::getString(g, {"name"}));
      int n = it == unplaced.end() ? 0 : it->second.first;
      kube::setMember(g, "unplaced", JsonValue(n), a);
      if (n > 0) {
        total += n;
        msg += (msg.empty() ? "" : "; ") + std::string("group ") + it->first + ": " + std::to_string(n) + " unplaced: " + it->second.second;
      }
    }
  }
  if (total > 0) setCondition(status, "Progressing", false, "Unschedulable", msg, generation, now);
}

}  // namespace op
