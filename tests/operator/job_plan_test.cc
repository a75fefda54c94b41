#include "operator/job/job_plan.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>

#include "kube/timeutil.h"
#include "kube/yaml.h"
#include "operator/job/job_controller.h"

namespace op {
namespace {

using namespace std::chrono_literals;

const TimePoint kT0 = kube::parseTime("2026-11-22T12:00:00Z").value();

kube::Json yaml(const std::string& text) {
  auto r = kube::yamlToJson(text);
  REQUIRE(r.isOk());
  return std::move(*r);
}

std::string serviceJob(const std::string& command, const std::string& update = "{maxParallel: 1, minHealthySeconds: 10, autoRevert: true}",
                       int count = 3) {
  return "metadata: {name: web, namespace: default, uid: u1, generation: 1}\n"
         "spec:\n  type: service\n  update: " + update + "\n"
         "  groups:\n  - name: app\n    count: " + std::to_string(count) + "\n"
         "    reschedulePolicy: {delaySeconds: 30, delayFunction: constant, unlimited: true}\n"
         "    tasks: [{name: t, command: [" + command + "]}]\n";
}

// A Job, its spec and its allocations, planned at `now`; the status of a plan is fed back in as
// the next call's Job status (what the API server would store).
struct World {
  kube::Json job;
  JobSpec spec;
  std::vector<kube::JsonPtr> allocs;
  std::set<std::string> workers{"w1", "w2"};
  std::map<std::string, std::set<std::string>> eligible;

  explicit World(const std::string& jobYaml) : job(yaml(jobYaml)) { reparse(); }
  void reparse() {
    auto s = parseJobSpec(job);
    REQUIRE(s.isOk());
    spec = *s;
  }
  Plan plan(TimePoint now) {
    PlanInput in;
    in.job = kube::shareJson(kube::cloneJson(job));
    in.spec = &spec;
    in.now = now;
    in.workers = workers;
    in.eligible = eligible;
    for (const auto& a : allocs) in.allocs.push_back(viewOf(a, spec));
    return planJob(in);
  }
  void keepStatus(const Plan& p) {
    kube::setMember(job, "status", kube::JsonValue(p.status, job.GetAllocator()), job.GetAllocator());
  }
  void setCommand(const std::string& cmd) {
    job["spec"]["groups"][0]["tasks"][0]["command"][0].SetString(cmd.c_str(), job.GetAllocator());
    reparse();
  }
  // The first plan's status kept, and the three allocations it asked for Running, healthy since
  // kT0: the starting point of most tests below.
  void settleThreeRunning() {
    keepStatus(plan(kT0));
    for (int i = 0; i < 3; ++i) add(std::to_string(i), 0, "Running", kT0);
  }
  // An allocation of the current template at `slot`, in `phase`, healthy since `healthy`.
  void add(const std::string& slot, int attempt, const std::string& phase, std::optional<TimePoint> healthySince,
           const std::string& worker = "w1", std::string hash = "", TimePoint created = kT0) {
    if (hash.empty()) hash = spec.groups[0].hash;
    std::string y = "metadata:\n  name: " + allocName("web", "app", slot, spec.isSystem(), attempt) +
                    "\n  namespace: default\n  creationTimestamp: \"" + kube::formatTime(created) + "\"\n"
                    "  labels: {foxden.io/job: web}\n  annotations:\n"
                    "    foxden.io/slot: \"" + slot + "\"\n    foxden.io/attempt: \"" + std::to_string(attempt) + "\"\n"
                    "    foxden.io/template-hash: \"" + hash + "\"\n";
    if (healthySince) y += "    foxden.io/healthy-since: \"" + kube::formatTime(*healthySince) + "\"\n";
    y += "spec: {workerName: " + worker + ", groupName: app, index: " + (spec.isSystem() ? "0" : slot) +
         ", desiredState: run, tasks: [{name: t, command: [x]}]}\n";
    y += "status: {phase: " + phase + ", tasks: [{name: t, state: " + (phase == "Running" ? "Running" : "Terminated") +
         ", ready: true}]";
    if (phase == "Failed" || phase == "Succeeded") y += ", finishedAt: \"" + kube::formatTime(created + 1s) + "\"";
    y += "}\n";
    allocs.push_back(kube::shareJson(yaml(y)));
  }
  // What the controller's stop write does: spec.desiredState stop on `name`.
  void stop(const std::string& name) {
    for (auto& a : allocs) {
      if (kube::name(*a) != name) continue;
      kube::Json c = kube::cloneJson(*a);
      kube::setString(c["spec"], "desiredState", "stop", c.GetAllocator());
      a = kube::shareJson(std::move(c));
    }
  }
};


TEST_CASE("plan: a new service Job places count allocations, version 0") {
  World w(serviceJob("v1"));
  Plan p = w.plan(kT0);
  REQUIRE(p.place.size() == 3);
  CHECK(p.place[0].slot == "0");
  CHECK(p.place[2].slot == "2");
  CHECK(p.place[0].attempt == 0);
  CHECK(kube::getInt(p.status, {"currentVersion"}) == 0);
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Running");
  CHECK(kube::getInt(p.status, {"desired"}) == 3);
  // Idempotent: the same inputs give the same plan.
  Plan q = w.plan(kT0);
  CHECK(q.place.size() == 3);
  CHECK(allocName("web", "app", "1", false, 4) == "web-app-1-4");
}

TEST_CASE("plan: healthy allocations finish the rollout and make the version stable") {
  World w(serviceJob("v1"));
  w.settleThreeRunning();
  Plan p = w.plan(kT0 + 5s);  // healthy for 5 s of the 10 needed
  CHECK(p.place.empty());
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Running");
  REQUIRE(p.requeueAfter);
  CHECK(p.requeueAfter->count() <= 5);
  p = w.plan(kT0 + 11s);
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Successful");
  CHECK(kube::getInt(p.status, {"stableVersion"}) == 0);
  CHECK(kube::getString(*condition(p.status, "Available"), {"status"}) == "True");
  CHECK(kube::getString(p.status, {"phase"}) == "Running");
}

TEST_CASE("plan: a new template rolls out maxParallel at a time, gated on health") {
  World w(serviceJob("v1"));
  w.settleThreeRunning();
  w.keepStatus(w.plan(kT0 + 11s));
  const std::string oldHash = w.spec.groups[0].hash;
  w.setCommand("v2");
  Plan p = w.plan(kT0 + 20s);
  CHECK(kube::getInt(p.status, {"currentVersion"}) == 1);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].slot == "0");
  CHECK(p.place[0].attempt == 1);
  CHECK(p.place[0].replaces == "web-app-0-0");
  CHECK(p.place[0].previous == "web-app-0-0");       // spec.previousAllocation of the new one
  CHECK(p.stop == std::vector<std::string>{"web-app-0-0"});  // stop first: in the same plan
  w.keepStatus(p);
  // The replacement exists and runs but is not healthy long enough: nothing more moves.
  w.allocs.erase(w.allocs.begin());
  w.add("0", 1, "Running", kT0 + 21s, "w1", "", kT0 + 20s);
  p = w.plan(kT0 + 25s);
  CHECK(p.place.empty());
  // Healthy for minHealthySeconds: the next slot.
  p = w.plan(kT0 + 32s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].slot == "1");
  CHECK(p.place[0].replaces == "web-app-1-0");
  CHECK(oldHash != w.spec.groups[0].hash);
}

TEST_CASE("plan: a failed new allocation fails the rollout and autoRevert goes back to stable") {
  World w(serviceJob("v1"));
  w.settleThreeRunning();
  w.keepStatus(w.plan(kT0 + 11s));
  w.setCommand("broken");
  Plan p = w.plan(kT0 + 20s);
  w.keepStatus(p);
  w.allocs.erase(w.allocs.begin());
  w.add("0", 1, "Failed", std::nullopt, "w1", "", kT0 + 21s);
  p = w.plan(kT0 + 25s);
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Reverted");
  REQUIRE(p.specUpdate);
  CHECK(std::string((*p.specUpdate)["groups"][0]["tasks"][0]["command"][0].GetString()) == "v1");
  CHECK((*p.specUpdate)["groups"][0]["count"].GetInt() == 3);
  bool reverted = false;
  for (const auto& e : p.events) reverted |= e.reason == "RolloutReverted";
  CHECK(reverted);
  // Crash between the status write and the spec write: the revert is written again.
  w.keepStatus(p);
  Plan again = w.plan(kT0 + 26s);
  REQUIRE(again.specUpdate);
  CHECK(std::string((*again.specUpdate)["groups"][0]["tasks"][0]["command"][0].GetString()) == "v1");
}

TEST_CASE("plan: an operator outage longer than the deadlines does not fail what turned healthy meanwhile") {
  // The operator records healthy-since when it sees an allocation healthy. Down (or without the
  // Lease) for longer than healthyDeadlineSeconds and progressDeadlineSeconds, it finds a
  // replacement healthy but unrecorded: that is progress, not a missed deadline.
  // A rollout to v2 whose replacement of slot 0, created at +10 s, is in `phase` when the operator
  // plans again 600 s later, with nothing recorded in between.
  auto afterOutage = [](const std::string& update, const std::string& phase) {
    World w(serviceJob("v1", update));
    w.settleThreeRunning();
    w.keepStatus(w.plan(kT0 + 2s));
    w.setCommand("v2");
    Plan p = w.plan(kT0 + 10s);
    REQUIRE(p.place.size() == 1);
    w.keepStatus(p);
    w.allocs.erase(w.allocs.begin());
    w.add("0", 1, phase, std::nullopt, "w1", "", kT0 + 10s);
    return w.plan(kT0 + 10s + 600s);
  };
  Plan p = afterOutage("{maxParallel: 1, minHealthySeconds: 1, healthyDeadlineSeconds: 60, progressDeadlineSeconds: 120, autoRevert: true}",
                       "Running");
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Running");
  CHECK(!p.specUpdate);
  REQUIRE(p.annotate.count("web-app-0-1"));
  // Not healthy after the deadline: that still fails the rollout.
  p = afterOutage("{maxParallel: 1, minHealthySeconds: 1, healthyDeadlineSeconds: 60, autoRevert: true}", "Pending");
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Reverted");
}

TEST_CASE("plan: rollbackTo copies a kept version's template and keeps the counts") {
  World w(serviceJob("v1"));
  w.keepStatus(w.plan(kT0));
  w.setCommand("v2");
  w.keepStatus(w.plan(kT0 + 1s));
  w.job["spec"]["groups"][0]["count"] = 5;
  kube::setMember(w.job["spec"], "rollbackTo", kube::JsonValue(rapidjson::kObjectType), w.job.GetAllocator());
  w.job["spec"]["rollbackTo"].AddMember("version", 0, w.job.GetAllocator());
  w.reparse();
  Plan p = w.plan(kT0 + 2s);
  REQUIRE(p.specUpdate);
  CHECK(std::string((*p.specUpdate)["groups"][0]["tasks"][0]["command"][0].GetString()) == "v1");
  CHECK((*p.specUpdate)["groups"][0]["count"].GetInt() == 5);
  CHECK_FALSE(p.specUpdate->HasMember("rollbackTo"));
}

TEST_CASE("plan: a lost allocation is replaced after the reschedule delay, elsewhere") {
  World w(serviceJob("v1"));
  w.settleThreeRunning();
  w.keepStatus(w.plan(kT0 + 11s));
  w.allocs.erase(w.allocs.begin());
  w.add("0", 0, "Failed", std::nullopt, "w2", "", kT0 + 100s);  // finished at T0+101s
  Plan p = w.plan(kT0 + 110s);
  CHECK(p.place.empty());
  REQUIRE(p.requeueAfter);
  p = w.plan(kT0 + 132s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].previous == "web-app-0-0");
  CHECK(p.place[0].attempt == 1);
  REQUIRE(p.place[0].penaltyWorkers.size() == 1);
  CHECK(p.place[0].penaltyWorkers[0] == "w2");
  CHECK(p.place[0].reschedules.size() == 1);
}

TEST_CASE("plan: canaries wait for promotion, then replace the old allocation of their slot") {
  World w(serviceJob("v1", "{maxParallel: 1, minHealthySeconds: 0, canary: 1}"));
  w.settleThreeRunning();
  w.keepStatus(w.plan(kT0 + 1s));
  w.setCommand("v2");
  Plan p = w.plan(kT0 + 2s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].canary);
  CHECK(p.place[0].replaces.empty());
  w.keepStatus(p);
  w.add("0", 1, "Running", kT0 + 3s, "w1", "", kT0 + 2s);
  kube::Json c = kube::cloneJson(*w.allocs.back());
  c["spec"].AddMember("canary", true, c.GetAllocator());
  w.allocs.back() = kube::shareJson(std::move(c));
  p = w.plan(kT0 + 4s);
  CHECK(p.place.empty());
  CHECK(p.stop.empty());
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Paused");
  w.keepStatus(p);
  w.job["spec"].AddMember("promoteVersion", 1, w.job.GetAllocator());
  w.reparse();
  p = w.plan(kT0 + 5s);
  CHECK(kube::getBool(p.status, {"deployment", "promoted"}));
  CHECK(std::find(p.stop.begin(), p.stop.end(), "web-app-0-0") != p.stop.end());
}

TEST_CASE("plan: a migrating allocation gets a replacement elsewhere") {
  World w(serviceJob("v1"));
  w.settleThreeRunning();
  w.keepStatus(w.plan(kT0 + 11s));
  kube::Json m = kube::cloneJson(*w.allocs[1]);
  m["spec"].AddMember("migrate", true, m.GetAllocator());
  w.allocs[1] = kube::shareJson(std::move(m));
  Plan p = w.plan(kT0 + 12s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].replaces == "web-app-1-0");
  CHECK(p.place[0].previous == "web-app-1-0");
  CHECK(p.place[0].penaltyWorkers == std::vector<std::string>{"w1"});
  CHECK(p.stop == std::vector<std::string>{"web-app-1-0"});  // stop first, as an update
  // The operator died after the stop: the next plan still places the replacement elsewhere.
  w.stop("web-app-1-0");
  p = w.plan(kT0 + 13s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].replaces == "web-app-1-0");
  CHECK(p.place[0].penaltyWorkers == std::vector<std::string>{"w1"});
  CHECK(p.stop.empty());
}

TEST_CASE("plan: scale down stops the highest slots; suspend stops everything") {
  World w(serviceJob("v1"));
  w.settleThreeRunning();
  w.job["spec"]["groups"][0]["count"] = 1;
  w.reparse();
  Plan p = w.plan(kT0 + 1s);
  CHECK(p.stop == std::vector<std::string>{"web-app-1-0", "web-app-2-0"});
  CHECK(p.stopReasons["web-app-1-0"].find("scaled down") != std::string::npos);
  CHECK(kube::getInt(p.status, {"currentVersion"}) == 0);  // a scale is not a new version
  w.job["spec"].AddMember("suspend", true, w.job.GetAllocator());
  w.reparse();
  p = w.plan(kT0 + 2s);
  CHECK(p.stop.size() == 3);
  CHECK(p.stopReasons["web-app-0-0"] == "the Job is suspended");
  CHECK(kube::getString(p.status, {"phase"}) == "Suspended");
}

TEST_CASE("plan: batch runs to completion with count at a time") {
  World w("metadata: {name: web, namespace: default, generation: 1}\n"
          "spec: {type: batch, backoffLimit: 1, groups: [{name: app, count: 2, completions: 3,"
          " reschedulePolicy: {delaySeconds: 0}, tasks: [{name: t, command: [x]}]}]}\n");
  Plan p = w.plan(kT0);
  CHECK(p.place.size() == 2);
  w.keepStatus(p);
  w.add("0", 0, "Succeeded", std::nullopt);
  w.add("1", 0, "Running", std::nullopt);
  p = w.plan(kT0 + 5s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].slot == "2");
  w.keepStatus(p);
  w.allocs.pop_back();
  w.add("1", 0, "Succeeded", std::nullopt);
  w.add("2", 0, "Succeeded", std::nullopt);
  p = w.plan(kT0 + 10s);
  CHECK(kube::getString(*condition(p.status, "Complete"), {"status"}) == "True");
  CHECK(kube::getString(p.status, {"phase"}) == "Complete");
}

TEST_CASE("plan: batch fails past backoffLimit and stops what runs") {
  World w("metadata: {name: web, namespace: default, generation: 1}\n"
          "spec: {type: batch, backoffLimit: 1, groups: [{name: app, count: 3, tasks: [{name: t, command: [x]}]}]}\n");
  w.keepStatus(w.plan(kT0));
  w.add("0", 0, "Failed", std::nullopt);
  w.add("1", 0, "Failed", std::nullopt);
  w.add("2", 0, "Running", std::nullopt);
  Plan p = w.plan(kT0 + 10s);
  CHECK(kube::getString(*condition(p.status, "Failed"), {"reason"}) == "BackoffLimitExceeded");
  CHECK(p.stop == std::vector<std::string>{"web-app-2-0"});
  CHECK(p.place.empty());
}

TEST_CASE("plan: a system job follows the eligible workers") {
  World w("metadata: {name: web, namespace: default, generation: 1}\n"
          "spec: {type: system, groups: [{name: app, tasks: [{name: t, command: [x]}]}]}\n");
  w.eligible["app"] = {"w1", "w2"};
  Plan p = w.plan(kT0);
  REQUIRE(p.place.size() == 2);
  CHECK(p.place[0].targetWorker == "w1");
  CHECK(p.place[1].targetWorker == "w2");
  w.keepStatus(p);
  w.add("w1", 0, "Running", kT0, "w1");
  w.add("w2", 0, "Running", kT0, "w2");
  // w2 turns ineligible (drained): its allocation is stopped; w3 joins: one is placed there.
  w.workers = {"w1", "w2", "w3"};
  w.eligible["app"] = {"w1", "w3"};
  kube::Json m = kube::cloneJson(*w.allocs[1]);
  m["spec"].AddMember("migrate", true, m.GetAllocator());
  w.allocs[1] = kube::shareJson(std::move(m));
  p = w.plan(kT0 + 20s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].targetWorker == "w3");
  CHECK(p.stop == std::vector<std::string>{allocName("web", "app", "w2", true, 0)});
  // A deleted worker: what it held counts as lost and is cleared.
  w.allocs.pop_back();
  w.add("w2", 0, "Running", kT0, "w2");
  w.workers = {"w1", "w3"};
  p = w.plan(kT0 + 30s);
  CHECK(p.stop.empty());
  CHECK(p.remove == std::vector<std::string>{allocName("web", "app", "w2", true, 0)});
}

// ---- stop-first updates -----------------------------------------------------------------------

// Three v1 allocations, healthy and stable, then the template changes to v2 at T0+20s.
World rolledOutThenChanged(const std::string& update, int count = 3) {
  World w(serviceJob("v1", update, count));
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < count; ++i) w.add(std::to_string(i), 0, "Running", kT0);
  w.keepStatus(w.plan(kT0 + 11s));
  w.setCommand("v2");
  return w;
}

TEST_CASE("stop first: a crash after the stop and before the create is finished by the next plan") {
  World w = rolledOutThenChanged("{maxParallel: 1, minHealthySeconds: 10}");
  const std::string oldHash = kube::getString(*w.allocs[0], {"metadata", "annotations", "foxden.io/template-hash"});
  Plan p = w.plan(kT0 + 20s);
  REQUIRE(p.place.size() == 1);
  REQUIRE(p.stop == std::vector<std::string>{"web-app-0-0"});
  // The stop was written (and maybe the status), the create never happened.
  w.keepStatus(p);
  w.stop("web-app-0-0");
  for (const char* phase : {"Running", "Failed"}) {  // still stopping, or already ended
    CAPTURE(phase);
    if (std::string(phase) == "Failed") {
      w.allocs.erase(w.allocs.begin());
      w.add("0", 0, "Failed", std::nullopt, "w1", oldHash);
      w.stop("web-app-0-0");
    }
    Plan q = w.plan(kT0 + 21s);
    // Exactly the missing replacement, named as before (a create that did happen answers 409),
    // and no second slot: the stopped slot is the one update maxParallel allows.
    REQUIRE(q.place.size() == 1);
    CHECK(q.place[0].slot == "0");
    CHECK(q.place[0].attempt == 1);
    CHECK(q.place[0].replaces == "web-app-0-0");
    CHECK(q.place[0].previous == "web-app-0-0");
    CHECK_FALSE(q.place[0].canary);
    CHECK(q.stop.empty());
    CHECK(kube::getString(q.status, {"deployment", "state"}) == "Running");
    CHECK(kube::getInt(q.status, {"currentVersion"}) == 1);
  }
  // Also when the status write was lost with the crash: the version is derived again.
  World v = rolledOutThenChanged("{maxParallel: 1, minHealthySeconds: 10}");
  v.stop("web-app-0-0");
  Plan r = v.plan(kT0 + 21s);
  REQUIRE(r.place.size() == 1);
  CHECK(r.place[0].slot == "0");
  CHECK(r.stop.empty());
}

TEST_CASE("stop first: a slot stopped for the update counts against maxParallel until its new one is healthy") {
  World w = rolledOutThenChanged("{maxParallel: 2, minHealthySeconds: 10}", 5);
  Plan p = w.plan(kT0 + 20s);
  CHECK(p.stop == std::vector<std::string>{"web-app-0-0", "web-app-1-0"});
  REQUIRE(p.place.size() == 2);
  w.keepStatus(p);
  // Slot 0's create happened, slot 1's did not (the operator died between them).
  w.stop("web-app-0-0");
  w.stop("web-app-1-0");
  w.add("0", 1, "Running", std::nullopt, "w1", "", kT0 + 20s);
  p = w.plan(kT0 + 21s);
  REQUIRE(p.place.size() == 1);  // slot 1's replacement, and nothing for slot 2
  CHECK(p.place[0].slot == "1");
  CHECK(p.stop.empty());
  // Both new ones exist, neither healthy: still nothing more moves.
  w.add("1", 1, "Running", std::nullopt, "w1", "", kT0 + 21s);
  p = w.plan(kT0 + 22s);
  CHECK(p.place.empty());
  CHECK(p.stop.empty());
}

TEST_CASE("stop first: the scheduler counts an allocation asked to stop until it is terminal") {
  auto alloc = [](const std::string& desired, const std::string& phase) {
    std::string y = "metadata: {name: web-app-0-0, namespace: default, labels: {foxden.io/job: web}}\n"
                    "spec: {workerName: w1, groupName: app, desiredState: " + desired +
                    ", resources: {cpu: 500m, memory: 64Mi, ports: [{name: http, value: 8080}]}}\n";
    if (!phase.empty()) y += "status: {phase: " + phase + "}\n";
    return yaml(y);
  };
  auto running = allocInfoOf(alloc("run", "Running"));
  REQUIRE(running);
  CHECK_FALSE(running->stopping);
  auto stopping = allocInfoOf(alloc("stop", "Running"));
  REQUIRE(stopping);  // still holds its cpu, memory and port while it runs out its kill timeout
  CHECK(stopping->stopping);
  CHECK(stopping->cpuMilli == 500);
  CHECK(stopping->ports.size() == 1);
  CHECK(allocInfoOf(alloc("stop", "Pending")));
  CHECK_FALSE(allocInfoOf(alloc("stop", "Failed")));  // ended: frees everything
  CHECK_FALSE(allocInfoOf(alloc("stop", "")));        // never started by an agent: holds nothing
  CHECK(allocInfoOf(alloc("run", "")));               // created, not started yet: holds its share
}

// A model of the cluster under a rollout, for the randomised crash check: each step one reconcile
// runs and is cut off after a random number of its writes (in the controller's order: health
// annotations, stops, deletions, creates gated on the replaced allocation being asked to stop,
// status last), agents start what was created and end what was stopped at random.
struct SimAlloc {
  std::string slot;
  int attempt = 0;
  std::string hash;
  std::string phase;  // "", Running, Failed
  bool stop = false;
  std::optional<TimePoint> healthySince;
  TimePoint created{};
};

kube::JsonPtr simJson(const SimAlloc& s) {
  std::string y = "metadata:\n  name: " + allocName("web", "app", s.slot, false, s.attempt) +
                  "\n  namespace: default\n  creationTimestamp: \"" + kube::formatTime(s.created) + "\"\n"
                  "  annotations:\n    foxden.io/slot: \"" + s.slot + "\"\n    foxden.io/attempt: \"" +
                  std::to_string(s.attempt) + "\"\n    foxden.io/template-hash: \"" + s.hash + "\"\n";
  if (s.healthySince) y += "    foxden.io/healthy-since: \"" + kube::formatTime(*s.healthySince) + "\"\n";
  y += "spec: {workerName: w1, groupName: app, index: " + s.slot + ", desiredState: " + (s.stop ? "stop" : "run") +
       ", tasks: [{name: t, command: [x]}]}\n";
  if (!s.phase.empty()) {
    y += "status: {phase: " + s.phase + ", tasks: [{name: t, state: " + (s.phase == "Running" ? "Running" : "Terminated") +
         ", ready: true}]";
    if (s.phase == "Failed") y += ", finishedAt: \"" + kube::formatTime(s.created + 1s) + "\"";
    y += "}\n";
  }
  return kube::shareJson(yaml(y));
}

TEST_CASE("stop first: random crashes never leave two live allocations for an index, nor exceed maxParallel") {
  const int kCount = 12, kMaxParallel = 3, kMinHealthy = 2;
  int crashes = 0, recovered = 0;
  for (unsigned seed = 1; seed <= 40; ++seed) {
    CAPTURE(seed);
    std::mt19937 rng(seed);
    auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
    World w(serviceJob("v1", "{maxParallel: " + std::to_string(kMaxParallel) + ", minHealthySeconds: " +
                                 std::to_string(kMinHealthy) + ", healthyDeadlineSeconds: 600}", kCount));
    w.keepStatus(w.plan(kT0));
    const std::string oldHash = w.spec.groups[0].hash;
    std::vector<SimAlloc> sim;
    sim.reserve(kCount);
    for (int i = 0; i < kCount; ++i) sim.push_back({std::to_string(i), 0, oldHash, "Running", false, kT0, kT0});
    auto sync = [&] {
      w.allocs.clear();
      for (const auto& s : sim) w.allocs.push_back(simJson(s));
    };
    sync();
    w.keepStatus(w.plan(kT0 + 10s));
    w.setCommand("v2");
    const std::string newHash = w.spec.groups[0].hash;
    TimePoint t = kT0 + 20s;
    bool converged = false;
    for (int step = 0; step < 400 && !converged; ++step, t += 1s) {
      // Agents: what was created starts; what was asked to stop ends, sooner or later.
      for (auto& s : sim) {
        if (s.stop && s.phase != "Failed" && chance(40)) s.phase = "Failed";
        if (!s.stop && s.phase.empty() && chance(70)) s.phase = "Running";
      }
      sync();
      Plan p = w.plan(t);
      // Writes in the controller's order; a crash cuts the list anywhere.
      size_t writes = p.annotate.size() + p.stop.size() + p.remove.size() + p.place.size() + 1;
      size_t budget = chance(30) ? rng() % writes : writes;
      crashes += budget < writes ? 1 : 0;
      auto take = [&] { return budget > 0 ? (budget--, true) : false; };
      auto find = [&](const std::string& name) -> SimAlloc* {
        for (auto& s : sim) if (allocName("web", "app", s.slot, false, s.attempt) == name) return &s;
        return nullptr;
      };
      for (const auto& [name, value] : p.annotate) {
        if (!take()) break;
        if (SimAlloc* s = find(name)) s->healthySince = value ? kube::parseTime(*value) : std::nullopt;
      }
      for (const auto& name : p.stop) {
        if (!take()) break;
        if (SimAlloc* s = find(name)) s->stop = true;
      }
      for (const auto& name : p.remove) {
        if (!take()) break;
        sim.erase(std::remove_if(sim.begin(), sim.end(), [&](const SimAlloc& s) {
          return allocName("web", "app", s.slot, false, s.attempt) == name;
        }), sim.end());
      }
      for (const auto& pr : p.place) {
        if (!take()) break;
        if (!pr.replaces.empty()) {
          const SimAlloc* old = find(pr.replaces);
          if (old != nullptr && !old->stop) continue;  // the controller's gate
          recovered += old != nullptr && std::find(p.stop.begin(), p.stop.end(), pr.replaces) == p.stop.end() ? 1 : 0;
        }
        if (find(allocName("web", "app", pr.slot, false, pr.attempt)) != nullptr) continue;  // 409
        sim.push_back({pr.slot, pr.attempt, newHash, "", false, std::nullopt, t});
      }
      if (take()) w.keepStatus(p);

      // The invariants, on what the API server now holds.
      std::map<std::string, int> live;
      std::set<std::string> midUpdate;
      for (const auto& s : sim) {
        if (!s.stop && s.phase != "Failed") live[s.slot]++;
        bool healthyNew = s.hash == newHash && !s.stop && s.phase == "Running" && s.healthySince &&
                          t - *s.healthySince >= std::chrono::seconds(kMinHealthy);
        if ((s.hash == oldHash && s.stop) || (s.hash == newHash && !healthyNew)) midUpdate.insert(s.slot);
      }
      for (const auto& s : sim) {
        bool healthyNew = s.hash == newHash && !s.stop && s.phase == "Running" && s.healthySince &&
                          t - *s.healthySince >= std::chrono::seconds(kMinHealthy);
        if (healthyNew) midUpdate.erase(s.slot);
      }
      for (const auto& entry : live) {
        const std::string& slot = entry.first;
        CAPTURE(slot);
        REQUIRE(entry.second <= 1);
      }
      REQUIRE(static_cast<int>(midUpdate.size()) <= kMaxParallel);
      converged = kube::getString(p.status, {"deployment", "state"}) == "Successful" && static_cast<int>(live.size()) == kCount &&
                  std::all_of(sim.begin(), sim.end(), [&](const SimAlloc& s) { return s.hash == newHash || s.stop; });
    }
    CHECK(converged);
  }
  CHECK(crashes > 100);  // the check saw many cut-off reconciles
  CHECK(recovered > 0);  // and replacements created by a later plan than their stop
}

TEST_CASE("stop first: canaries still run beside the allocation they may replace") {
  World w = rolledOutThenChanged("{maxParallel: 1, minHealthySeconds: 0, canary: 2}");
  Plan p = w.plan(kT0 + 20s);
  REQUIRE(p.place.size() == 1);  // maxParallel bounds the canaries placed at once
  CHECK(p.place[0].canary);
  CHECK(p.place[0].replaces.empty());
  CHECK(p.stop.empty());
  w.keepStatus(p);
  w.add("0", 1, "Running", kT0 + 21s, "w1", "", kT0 + 20s);
  kube::Json c = kube::cloneJson(*w.allocs.back());
  c["spec"].AddMember("canary", true, c.GetAllocator());
  w.allocs.back() = kube::shareJson(std::move(c));
  p = w.plan(kT0 + 22s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].slot == "1");
  CHECK(p.place[0].canary);
  CHECK(p.stop.empty());  // web-app-0-0 runs on beside its canary
}

TEST_CASE("stop first: autoRevert after a failed replacement restores the stopped slot with the stable template") {
  World w = rolledOutThenChanged("{maxParallel: 1, minHealthySeconds: 10, autoRevert: true}");
  const std::string v1Hash = kube::getString(*w.allocs[0], {"metadata", "annotations", "foxden.io/template-hash"});
  Plan p = w.plan(kT0 + 20s);
  REQUIRE(p.stop == std::vector<std::string>{"web-app-0-0"});
  w.keepStatus(p);
  w.stop("web-app-0-0");
  w.add("0", 1, "Failed", std::nullopt, "w1", "", kT0 + 21s);  // the replacement failed
  p = w.plan(kT0 + 25s);
  CHECK(kube::getString(p.status, {"deployment", "state"}) == "Reverted");
  REQUIRE(p.specUpdate);
  CHECK(p.place.empty());
  CHECK(p.stop.empty());  // nothing else is touched while reverting
  // The revert is written: the template is v1 again (a new version); slot 0 gets a v1 allocation.
  w.keepStatus(p);
  kube::setMember(w.job, "spec", kube::JsonValue(*p.specUpdate, w.job.GetAllocator()), w.job.GetAllocator());
  w.reparse();
  CHECK(w.spec.groups[0].hash == v1Hash);
  p = w.plan(kT0 + 26s);
  CHECK(kube::getInt(p.status, {"currentVersion"}) == 2);
  CHECK(p.stop.empty());  // slots 1 and 2 already run the stable template: kept
  // Slot 0's newest attempt failed: it is placed again after the reschedule delay (30 s from
  // its finish at T0+22s), with the stable template.
  CHECK(p.place.empty());
  REQUIRE(p.requeueAfter);
  w.keepStatus(p);
  p = w.plan(kT0 + 53s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].slot == "0");
  CHECK(p.place[0].attempt == 2);
  CHECK(p.place[0].previous == "web-app-0-1");
  CHECK(p.stop.empty());
}

TEST_CASE("stop first: batch, sysbatch and system placements") {
  SUBCASE("batch: placements and reschedules replace nothing and stop nothing") {
    World w("metadata: {name: web, namespace: default, generation: 1}\n"
            "spec: {type: batch, groups: [{name: app, count: 2, completions: 3,"
            " reschedulePolicy: {delaySeconds: 0}, tasks: [{name: t, command: [x]}]}]}\n");
    w.keepStatus(w.plan(kT0));
    w.add("0", 0, "Failed", std::nullopt);
    w.add("1", 0, "Running", std::nullopt);
    Plan p = w.plan(kT0 + 5s);
    REQUIRE(p.place.size() == 1);  // count 2: the reschedule of slot 0 (slot 2 waits)
    CHECK(p.place[0].slot == "0");
    CHECK(p.place[0].previous == "web-app-0-0");
    CHECK(p.place[0].replaces.empty());
    CHECK(p.stop.empty());
  }
  SUBCASE("sysbatch: one per eligible worker, nothing replaced") {
    World w("metadata: {name: web, namespace: default, generation: 1}\n"
            "spec: {type: sysbatch, groups: [{name: app, tasks: [{name: t, command: [x]}]}]}\n");
    w.eligible["app"] = {"w1", "w2"};
    Plan p = w.plan(kT0);
    REQUIRE(p.place.size() == 2);
    for (const auto& pr : p.place) CHECK(pr.replaces.empty());
    CHECK(p.stop.empty());
  }
  SUBCASE("system: an update stops first and places on the same worker") {
    World w("metadata: {name: web, namespace: default, generation: 1}\n"
            "spec: {type: system, update: {maxParallel: 1, minHealthySeconds: 0},"
            " groups: [{name: app, tasks: [{name: t, command: [v1]}]}]}\n");
    w.eligible["app"] = {"w1", "w2"};
    w.keepStatus(w.plan(kT0));
    w.add("w1", 0, "Running", kT0, "w1");
    w.add("w2", 0, "Running", kT0, "w2");
    w.keepStatus(w.plan(kT0 + 1s));
    w.setCommand("v2");
    Plan p = w.plan(kT0 + 2s);
    const std::string old = allocName("web", "app", "w1", true, 0);
    REQUIRE(p.place.size() == 1);
    CHECK(p.place[0].targetWorker == "w1");
    CHECK(p.place[0].replaces == old);
    CHECK(p.stop == std::vector<std::string>{old});
    w.keepStatus(p);
    w.stop(old);  // crash: the next plan places it, and does not start w2 yet
    p = w.plan(kT0 + 3s);
    REQUIRE(p.place.size() == 1);
    CHECK(p.place[0].targetWorker == "w1");
    CHECK(p.stop.empty());
  }
}

}  // namespace
}  // namespace op
