// Unit tests of the decision parts of the worker lifecycle, drain and periodic controllers: no API
// server, an injected clock. (End to end: tests/integration/operator_hollow_test.sh.)
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "kube/json.h"
#include "kube/timeutil.h"
#include "operator/drain_controller.h"
#include "operator/periodic_controller.h"
#include "operator/worker_controller.h"

namespace op {
namespace {

using namespace std::chrono_literals;
using kube::JsonPtr;

kube::TimePoint t0() { return *kube::parseTime("2026-11-22T12:00:00Z"); }

std::vector<std::string> darkAt(const WorkerHealth& h, kube::TimePoint t) { return h.evaluate(t).dark; }

TEST_CASE("worker health: a full grace period from the first look, renewals judged by observation") {
  WorkerHealth h(40s, 0.55);
  // Leases last renewed long before the operator started (the control plane was down): no evidence.
  for (const char* w : {"a", "b", "c", "d"}) h.observe(w, "2026-11-22T10:00:00.000000Z", t0());
  CHECK(darkAt(h, t0() + 39s).empty());
  // a, b, c renew; d does not.
  for (const char* w : {"a", "b", "c"}) h.observe(w, "2026-11-22T12:00:30.000000Z", t0() + 30s);
  h.observe("d", "2026-11-22T10:00:00.000000Z", t0() + 30s);
  CHECK(darkAt(h, t0() + 41s) == std::vector<std::string>{"d"});
  CHECK_FALSE(h.evaluate(t0() + 41s).storm);  // 1 of 4
  // d comes back: its renewTime changed.
  h.observe("d", "2026-11-22T12:00:45.000000Z", t0() + 45s);
  CHECK(darkAt(h, t0() + 46s).empty());
  // A renewTime that goes backwards is a change too (we never compare it with our clock).
  h.observe("d", "2026-11-22T09:00:00.000000Z", t0() + 50s);
  auto dark = darkAt(h, t0() + 80s);  // a, b, c went quiet after t0+30s; d renewed at t0+50s
  CHECK(dark == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("worker health: eviction storms") {
  WorkerHealth h(40s, 0.55);
  for (int i = 0; i < 10; ++i) h.observe("w" + std::to_string(i), "r0", t0());
  // 5 of 10 dark: below 55%.
  for (int i = 0; i < 5; ++i) h.observe("w" + std::to_string(i), "r1", t0() + 30s);
  auto v = h.evaluate(t0() + 50s);
  CHECK(v.dark.size() == 5);
  CHECK_FALSE(v.storm);
  // 6 of 10: a storm.
  h.observe("w0", "r1", t0() + 30s);  // unchanged: still its t0+30s probe
  for (int i = 1; i < 5; ++i) h.observe("w" + std::to_string(i), "r2", t0() + 60s);
  v = h.evaluate(t0() + 75s);
  CHECK(v.dark.size() == 6);
  CHECK(v.storm);
  // Small clusters: two of three dark is not a storm (Kubernetes wants more than two), all is.
  WorkerHealth s(40s, 0.55);
  for (const char* w : {"x", "y", "z"}) s.observe(w, "r", t0());
  s.observe("x", "r1", t0() + 30s);
  CHECK_FALSE(s.evaluate(t0() + 50s).storm);
  CHECK(s.evaluate(t0() + 80s).storm);  // x too: all dark
  // Workers that left are forgotten.
  s.retain({"x"});
  CHECK(s.evaluate(t0() + 80s).total == 1);
}

JsonPtr alloc(const std::string& name, const std::string& phase, bool migrate = false, const std::string& prev = "",
              const std::string& healthy = "True", const std::string& jobType = "service") {
  std::string s = R"({"metadata":{"name":")" + name + R"(","namespace":"default"},"spec":{"workerName":"w","jobType":")" +
                  jobType + R"(","migrate":)" + (migrate ? "true" : "false") + R"(,"previousAllocation":")" + prev +
                  R"("},"status":{"phase":")" + phase + R"(","conditions":[{"type":"Healthy","status":")" + healthy + R"("}]}})";
  auto j = kube::parseJson(s);
  REQUIRE(j.isOk());
  return kube::shareJson(std::move(*j));
}

std::vector<std::string> names(const std::vector<JsonPtr>& v) {
  std::vector<std::string> out;
  out.reserve(v.size());
  for (const auto& a : v) out.push_back(kube::name(*a));
  return out;
}

TEST_CASE("drain plan: never more than maxParallel in flight") {
  DrainSpec spec;
  spec.maxParallel = 2;
  std::map<std::string, JsonPtr> repl;
  auto replacementOf = [&](const kube::JsonValue& old) -> JsonPtr {
    auto it = repl.find(kube::name(old));
    return it == repl.end() ? nullptr : it->second;
  };
  std::vector<JsonPtr> on{alloc("a3", "Running"), alloc("a1", "Running"), alloc("a2", "Running"), alloc("a4", "Running")};
  DrainPlan p = planDrain(spec, on, replacementOf, false);
  CHECK(names(p.migrate) == std::vector<std::string>{"a1", "a2"});
  CHECK(p.remaining == 4);
  CHECK_FALSE(p.complete);

  // a1 and a2 migrating; a1's old one stopped but its replacement is not healthy yet: still 2 in flight.
  on = {alloc("a1", "Failed", true), alloc("a2", "Running", true), alloc("a3", "Running"), alloc("a4", "Running")};
  repl["a1"] = alloc("b1", "Running", false, "a1", "False");
  p = planDrain(spec, on, replacementOf, false);
  CHECK(p.inFlight == 2);
  CHECK(p.migrate.empty());
  // The replacement turns healthy: one slot frees.
  repl["a1"] = alloc("b1", "Running", false, "a1", "True");
  p = planDrain(spec, on, replacementOf, false);
  CHECK(p.inFlight == 1);
  CHECK(names(p.migrate) == std::vector<std::string>{"a3"});
  // A healthy replacement while the old one still runs: still in flight.
  repl["a2"] = alloc("b2", "Running", false, "a2", "True");
  p = planDrain(spec, on, replacementOf, false);
  CHECK(p.inFlight == 1);

  // Deadline: stop what is left, migrate nothing.
  p = planDrain(spec, on, replacementOf, true);
  CHECK(p.migrate.empty());
  CHECK(names(p.stop) == std::vector<std::string>{"a2", "a3", "a4"});

  // Stop first: a3's old one was stopped (and has ended) before its replacement exists; the
  // replacement is still to come, so a3 stays in flight (a system job's gets none).
  auto stopped = [](JsonPtr a) {
    kube::Json c = kube::cloneJson(*a);
    kube::setString(c["spec"], "desiredState", "stop", c.GetAllocator());
    return kube::shareJson(std::move(c));
  };
  std::vector<JsonPtr> mid{alloc("a1", "Failed", true), stopped(alloc("a3", "Failed", true)), alloc("a4", "Running")};
  p = planDrain(spec, mid, replacementOf, false);
  CHECK(p.inFlight == 1);
  CHECK(names(p.migrate) == std::vector<std::string>{"a4"});
  mid[1] = stopped(alloc("a3", "Failed", true, "", "True", "system"));
  CHECK(planDrain(spec, mid, replacementOf, false).inFlight == 0);

  // Everything moved.
  on = {alloc("a1", "Failed", true), alloc("a2", "Failed", true)};
  p = planDrain(spec, on, replacementOf, false);
  CHECK(p.complete);
  CHECK(p.remaining == 0);

  // ignoreSystemJobs leaves system allocations alone.
  spec.ignoreSystemJobs = true;
  on = {alloc("s1", "Running", false, "", "True", "system")};
  p = planDrain(spec, on, replacementOf, false);
  CHECK(p.migrate.empty());
  CHECK(p.complete);
}

Seconds at(const char* s) { return std::chrono::time_point_cast<std::chrono::seconds>(*kube::parseTime(s)); }

TEST_CASE("periodic: the tick to act on") {
  auto c = CronSchedule::parse("*/5 * * * *");
  REQUIRE(c.isOk());
  TimeZone utc = TimeZone::utc();
  // Nothing due yet.
  auto w = scheduleWindow(*c, utc, at("2026-11-22T12:00:00Z"), at("2026-11-22T12:04:59Z"));
  CHECK_FALSE(w.recent.has_value());
  CHECK(kube::formatTime(*w.next) == "2026-11-22T12:05:00Z");
  // Three ticks missed: act on the latest only.
  w = scheduleWindow(*c, utc, at("2026-11-22T12:00:00Z"), at("2026-11-22T12:17:00Z"));
  CHECK(kube::formatTime(*w.recent) == "2026-11-22T12:15:00Z");
  CHECK(w.missed == 3);
  CHECK(kube::formatTime(*w.next) == "2026-11-22T12:20:00Z");
  // A tick exactly at now counts.
  w = scheduleWindow(*c, utc, at("2026-11-22T12:00:00Z"), at("2026-11-22T12:05:00Z"));
  CHECK(kube::formatTime(*w.recent) == "2026-11-22T12:05:00Z");
  // Years of outage stay cheap.
  w = scheduleWindow(*c, utc, at("2020-01-01T00:00:00Z"), at("2026-11-22T12:07:00Z"));
  CHECK(kube::formatTime(*w.recent) == "2026-11-22T12:05:00Z");
}

TEST_CASE("periodic: the fake clock file") {
  std::string path = "/tmp/foxden-hollow-clock-" + std::to_string(::getpid());
  auto clock = fileClock(path);
  auto real = clock();  // no file: the real clock
  CHECK(std::chrono::abs(real - kube::Clock::now()) < 5s);
  std::ofstream(path) << "2030-01-01T00:00:00Z\n";
  CHECK(kube::formatTime(clock()) == "2030-01-01T00:00:00Z");
  std::remove(path.c_str());
}

TEST_CASE("periodic: which parent an event concerns") {
  auto parent = kube::parseJson(R"({"metadata":{"name":"p","namespace":"ns"},"spec":{"schedule":{"cron":"@daily"}}})");
  auto child = kube::parseJson(
      R"({"metadata":{"name":"p-1","namespace":"ns","ownerReferences":[{"kind":"Job","name":"p","uid":"u","controller":true}]},"spec":{}})");
  auto plain = kube::parseJson(R"({"metadata":{"name":"x","namespace":"ns"},"spec":{}})");
  CHECK(PeriodicReconciler::keyFor(*parent) == "ns/p");
  CHECK(PeriodicReconciler::keyFor(*child) == "ns/p");
  CHECK(PeriodicReconciler::keyFor(*plain).empty());
}

}  // namespace
}  // namespace op
