#include "operator/job/job_plan.h"

#include <doctest/doctest.h>

#include "kube/timeutil.h"
#include "kube/yaml.h"

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
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
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
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
  w.keepStatus(w.plan(kT0 + 11s));
  const std::string oldHash = w.spec.groups[0].hash;
  w.setCommand("v2");
  Plan p = w.plan(kT0 + 20s);
  CHECK(kube::getInt(p.status, {"currentVersion"}) == 1);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].slot == "0");
  CHECK(p.place[0].attempt == 1);
  CHECK(p.place[0].replaces == "web-app-0-0");
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
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
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
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
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
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
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
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
  w.keepStatus(w.plan(kT0 + 11s));
  kube::Json m = kube::cloneJson(*w.allocs[1]);
  m["spec"].AddMember("migrate", true, m.GetAllocator());
  w.allocs[1] = kube::shareJson(std::move(m));
  Plan p = w.plan(kT0 + 12s);
  REQUIRE(p.place.size() == 1);
  CHECK(p.place[0].replaces == "web-app-1-0");
  CHECK(p.place[0].penaltyWorkers == std::vector<std::string>{"w1"});
}

TEST_CASE("plan: scale down stops the highest slots; suspend stops everything") {
  World w(serviceJob("v1"));
  w.keepStatus(w.plan(kT0));
  for (int i = 0; i < 3; ++i) w.add(std::to_string(i), 0, "Running", kT0);
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

}  // namespace
}  // namespace op
