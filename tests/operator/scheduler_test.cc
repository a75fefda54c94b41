// The scheduler on its own: feasibility rules, ranking, GPU and port choices, preemption, failure
// messages, state bookkeeping, and a randomized check that nothing is ever over-committed.
// GPUs here are fakes (WorkerInfo entries); nothing touches the host.

#include "operator/scheduler/scheduler.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace scheduler {
namespace {

constexpr int64_t kGi = int64_t{1} << 30;

WorkerInfo makeWorker(const std::string& name, int64_t cpu = 4000, int64_t memory = 8 * kGi,
                      std::map<std::string, std::string> labels = {}) {
  WorkerInfo w;
  w.name = name;
  w.ready = true;
  w.labels = std::move(labels);
  w.drivers = {"exec", "raw_exec"};
  w.cpuMilli = cpu;
  w.memoryBytes = memory;
  return w;
}

// A fake GPU inventory: `count` GPUs of one vendor and model.
std::vector<Gpu> fakeGpus(int count, const std::string& vendor, const std::string& model, int64_t memory) {
  std::vector<Gpu> gpus;
  gpus.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    gpus.push_back({vendor, i, "GPU-fake-" + model + "-" + std::to_string(i), model, memory});
  }
  return gpus;
}

PlacementRequest request(int64_t cpu = 500, int64_t memory = kGi) {
  PlacementRequest r;
  r.jobKey = "default/web";
  r.group = "web";
  r.cpuMilli = cpu;
  r.memoryBytes = memory;
  return r;
}

Placement placed(const PlacementResult& r) {
  if (const auto* f = std::get_if<PlacementFailure>(&r)) FAIL("not placed: ", f->message());
  return std::get<Placement>(r);
}

PlacementFailure failed(const PlacementResult& r) {
  if (const auto* p = std::get_if<Placement>(&r)) FAIL("placed on ", p->worker);
  return std::get<PlacementFailure>(r);
}

SchedulerOptions scoreAll() {
  SchedulerOptions o;
  o.scoreLimit = 0;
  return o;
}

TEST_CASE("scheduler: a worker must be ready, schedulable and have the driver") {
  ClusterState state;
  WorkerInfo notReady = makeWorker("w-notready");
  notReady.ready = false;
  WorkerInfo cordoned = makeWorker("w-cordoned");
  cordoned.schedulable = false;
  WorkerInfo rawOnly = makeWorker("w-raw");
  rawOnly.drivers = {"raw_exec"};
  state.upsertWorker(notReady);
  state.upsertWorker(cordoned);
  state.upsertWorker(rawOnly);
  Scheduler s(state, scoreAll());
  auto req = request();
  CHECK(s.infeasibleReason(req, "w-notready") == "not ready");
  CHECK(s.infeasibleReason(req, "w-cordoned") == "unschedulable");
  CHECK(s.infeasibleReason(req, "w-raw") == "missing driver exec");
  CHECK(failed(s.place(req, "a1")).message() ==
        "0/3 workers are available: 1 missing driver exec, 1 not ready, 1 unschedulable.");
  req.driver = "raw_exec";
  CHECK(placed(s.place(req, "a2")).worker == "w-raw");
}

TEST_CASE("scheduler: constraints on labels") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-a", 4000, 8 * kGi, {{"zone", "a"}, {"disk", "ssd"}, {"cores", "8"}}));
  state.upsertWorker(makeWorker("w-b", 4000, 8 * kGi, {{"zone", "b"}, {"cores", "32"}}));
  Scheduler s(state, scoreAll());
  auto with = [](Requirement r) {
    auto req = request();
    req.constraints.push_back(std::move(r));
    return req;
  };
  CHECK(s.infeasibleReason(with({"zone", "In", {"a", "c"}}), "w-a") == std::nullopt);
  CHECK(s.infeasibleReason(with({"zone", "In", {"a", "c"}}), "w-b") == "constraint zone In a,c not met");
  CHECK(s.infeasibleReason(with({"zone", "NotIn", {"a"}}), "w-a") == "constraint zone NotIn a not met");
  CHECK(s.infeasibleReason(with({"zone", "NotIn", {"a"}}), "w-b") == std::nullopt);
  CHECK(s.infeasibleReason(with({"rack", "NotIn", {"r1"}}), "w-b") == std::nullopt);  // absent: not in
  CHECK(s.infeasibleReason(with({"disk", "Exists", {}}), "w-a") == std::nullopt);
  CHECK(s.infeasibleReason(with({"disk", "Exists", {}}), "w-b") == "constraint disk Exists not met");
  CHECK(s.infeasibleReason(with({"disk", "DoesNotExist", {}}), "w-a") == "constraint disk DoesNotExist not met");
  CHECK(s.infeasibleReason(with({"disk", "DoesNotExist", {}}), "w-b") == std::nullopt);
  CHECK(s.infeasibleReason(with({"cores", "Gt", {"16"}}), "w-a") == "constraint cores Gt 16 not met");
  CHECK(s.infeasibleReason(with({"cores", "Gt", {"16"}}), "w-b") == std::nullopt);
  CHECK(s.infeasibleReason(with({"cores", "Lt", {"16"}}), "w-a") == std::nullopt);
  CHECK(s.infeasibleReason(with({"cores", "Lt", {"16"}}), "w-b") == "constraint cores Lt 16 not met");
  CHECK(s.infeasibleReason(with({"zone", "Gt", {"1"}}), "w-a").has_value());  // not a number
  CHECK(s.infeasibleReason(with({"nokey", "In", {"x"}}), "w-a").has_value());
  CHECK(s.infeasibleReason(with({"zone", "Bogus", {"a"}}), "w-a").has_value());
  CHECK(placed(s.place(with({"zone", "In", {"b"}}), "a1")).worker == "w-b");

  // Labels change: the constraint follows.
  state.upsertWorker(makeWorker("w-b", 4000, 8 * kGi, {{"zone", "c"}}));
  CHECK(s.infeasibleReason(with({"zone", "In", {"b"}}), "w-b") == "constraint zone In b not met");
}

TEST_CASE("scheduler: constraints on attributes worker, driver and gpu-memory") {
  ClusterState state;
  WorkerInfo big = makeWorker("w-big");
  big.gpus = fakeGpus(1, "nvidia", "H100", 80 * kGi);
  WorkerInfo small = makeWorker("w-small");
  small.gpus = fakeGpus(1, "nvidia", "T4", 16 * kGi);
  small.drivers = {"exec"};
  state.upsertWorker(big);
  state.upsertWorker(small);
  state.upsertWorker(makeWorker("w-cpu"));
  Scheduler s(state, scoreAll());
  auto with = [](Requirement r) {
    auto req = request();
    req.constraints.push_back(std::move(r));
    return req;
  };
  CHECK(s.infeasibleReason(with({"foxden.io/worker", "In", {"w-small"}}), "w-small") == std::nullopt);
  CHECK(s.infeasibleReason(with({"foxden.io/worker", "In", {"w-small"}}), "w-big").has_value());
  CHECK(s.infeasibleReason(with({"foxden.io/worker", "NotIn", {"w-small"}}), "w-small").has_value());
  CHECK(s.infeasibleReason(with({"foxden.io/driver", "In", {"raw_exec"}}), "w-big") == std::nullopt);
  CHECK(s.infeasibleReason(with({"foxden.io/driver", "In", {"raw_exec"}}), "w-small") ==
        "constraint foxden.io/driver In raw_exec not met");
  CHECK(s.infeasibleReason(with({"foxden.io/driver", "NotIn", {"raw_exec"}}), "w-small") == std::nullopt);
  CHECK(s.infeasibleReason(with({"foxden.io/gpu-memory", "Gt", {"40Gi"}}), "w-big") == std::nullopt);
  CHECK(s.infeasibleReason(with({"foxden.io/gpu-memory", "Gt", {"40Gi"}}), "w-small").has_value());
  CHECK(s.infeasibleReason(with({"foxden.io/gpu-memory", "Gt", {"40Gi"}}), "w-cpu").has_value());
  CHECK(s.infeasibleReason(with({"foxden.io/gpu-memory", "Exists", {}}), "w-cpu").has_value());
  CHECK(s.infeasibleReason(with({"foxden.io/gpu-memory", "Lt", {"20000000000"}}), "w-small") == std::nullopt);
}

TEST_CASE("scheduler: cpu and memory must be free") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-1", 1000, 2 * kGi));
  Scheduler s(state, scoreAll());
  CHECK(placed(s.place(request(600, kGi), "a1")).worker == "w-1");
  CHECK(s.infeasibleReason(request(600, kGi), "w-1") == "insufficient cpu");
  CHECK(s.infeasibleReason(request(400, 2 * kGi), "w-1") == "insufficient memory");
  CHECK(s.infeasibleReason(request(400, kGi), "w-1") == std::nullopt);  // exactly full is fine
  CHECK(failed(s.place(request(600, kGi), "a2")).message() == "0/1 workers are available: 1 insufficient cpu.");
  // Removing the allocation frees its resources.
  state.removeAlloc("a1");
  CHECK(placed(s.place(request(600, kGi), "a3")).worker == "w-1");
  CHECK(state.allocCount() == 1);
}

TEST_CASE("scheduler: DistinctHosts per group and per job") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-1"));
  state.upsertWorker(makeWorker("w-2"));
  Scheduler s(state, scoreAll());
  auto req = request();
  req.constraints.push_back({"", "DistinctHosts", {}});
  std::string first = placed(s.place(req, "a1")).worker;
  std::string second = placed(s.place(req, "a2")).worker;
  CHECK(first != second);
  CHECK(failed(s.place(req, "a3")).message() == "0/2 workers are available: 2 distinct hosts.");
  // Another group of the job may share hosts unless the job asks for distinct hosts.
  auto other = request();
  other.group = "worker";
  CHECK(std::holds_alternative<Placement>(s.place(other, "b1")));
  state.removeAlloc("b1");
  other.distinctHostsJob = true;
  CHECK(failed(s.place(other, "b2")).reasons.at("distinct hosts") == 2);
  state.removeAlloc("a1");
  CHECK(placed(s.place(other, "b3")).worker == first);
  CHECK(placed(s.place(req, "a4")).worker == first);  // group-level: only a2's worker is taken
}

TEST_CASE("scheduler: GPUs: count, vendor, model and memory; distinct free indexes") {
  ClusterState state;
  WorkerInfo a100 = makeWorker("w-a100", 64000, 256 * kGi);
  a100.gpus = fakeGpus(4, "nvidia", "A100", 40 * kGi);
  WorkerInfo h100 = makeWorker("w-h100", 64000, 256 * kGi);
  h100.gpus = fakeGpus(2, "nvidia", "H100", 80 * kGi);
  WorkerInfo amd = makeWorker("w-amd", 64000, 256 * kGi);
  amd.gpus = fakeGpus(2, "amd", "MI250", 64 * kGi);
  state.upsertWorker(a100);
  state.upsertWorker(h100);
  state.upsertWorker(amd);
  state.upsertWorker(makeWorker("w-cpu", 64000, 256 * kGi));
  Scheduler s(state, scoreAll());

  auto gpuReq = [](int count, std::vector<std::string> models, int64_t minMemory = 0) {
    auto r = request();
    r.gpus.count = count;
    r.gpus.vendor = "nvidia";
    r.gpus.models = std::move(models);
    r.gpus.minMemoryBytes = minMemory;
    return r;
  };
  std::set<int> a100Used;
  for (int i = 0; i < 2; ++i) {
    Placement p = placed(s.place(gpuReq(2, {"A100"}), "g" + std::to_string(i)));
    CHECK(p.worker == "w-a100");
    REQUIRE(p.gpus.size() == 2);
    for (const auto& g : p.gpus) {
      CHECK(g.model == "A100");
      CHECK(a100Used.insert(g.index).second);  // never handed out twice
    }
  }
  CHECK(a100Used == std::set<int>{0, 1, 2, 3});
  CHECK(s.infeasibleReason(gpuReq(1, {"A100"}), "w-a100") == "missing nvidia.com/gpu");
  CHECK(s.infeasibleReason(gpuReq(1, {"A100"}), "w-h100") == "no GPU matching model/memory");
  CHECK(s.infeasibleReason(gpuReq(1, {"A100"}), "w-amd") == "missing nvidia.com/gpu");
  CHECK(s.infeasibleReason(gpuReq(1, {}, 64 * kGi), "w-h100") == std::nullopt);
  CHECK(s.infeasibleReason(gpuReq(3, {}), "w-h100") == "missing nvidia.com/gpu");
  CHECK(failed(s.place(gpuReq(1, {"A100"}), "g9")).message() ==
        "0/4 workers are available: 3 missing nvidia.com/gpu, 1 no GPU matching model/memory.");

  Placement big = placed(s.place(gpuReq(1, {"A100", "H100"}, 64 * kGi), "g10"));
  CHECK(big.worker == "w-h100");
  auto amdReq = request();
  amdReq.gpus.count = 2;
  amdReq.gpus.vendor = "amd";
  Placement onAmd = placed(s.place(amdReq, "g11"));
  CHECK(onAmd.worker == "w-amd");
  CHECK(onAmd.gpus.size() == 2);

  // Freed GPUs are handed out again.
  state.removeAlloc("g0");
  Placement again = placed(s.place(gpuReq(2, {"A100"}), "g12"));
  CHECK(again.worker == "w-a100");
  CHECK(again.gpus.size() == 2);
}

TEST_CASE("scheduler: static ports conflict, dynamic ports never do") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-1", 1000000, 1000 * kGi));
  state.upsertWorker(makeWorker("w-2", 1000000, 1000 * kGi));
  SchedulerOptions o = scoreAll();
  o.dynamicPortMin = 20000;
  o.dynamicPortMax = 20099;  // 100 ports per worker
  Scheduler s(state, o);

  auto web = request(1, 1);
  web.ports = {{"http", 8080}};
  CHECK(std::holds_alternative<Placement>(s.place(web, "s1")));
  CHECK(std::holds_alternative<Placement>(s.place(web, "s2")));
  CHECK(failed(s.place(web, "s3")).message() == "0/2 workers are available: 2 port 8080 in use.");

  auto dyn = request(1, 1);
  dyn.ports = {{"a", 0}, {"b", 0}, {"fixed", 20050}};
  std::map<std::string, std::set<int>> used{{"w-1", {8080}}, {"w-2", {8080}}};
  int placedCount = 0;
  for (int i = 0; i < 100; ++i) {
    auto r = s.place(dyn, "d" + std::to_string(i));
    if (!std::holds_alternative<Placement>(r)) break;
    const Placement& p = std::get<Placement>(r);
    REQUIRE(p.ports.size() == 3);
    CHECK(p.ports[2].value == 20050);
    for (const auto& port : p.ports) {
      CHECK(used[p.worker].insert(port.value).second);  // no port handed out twice on a worker
      if (port.name != "fixed") CHECK((port.value >= 20000 && port.value <= 20099));
    }
    ++placedCount;
  }
  CHECK(placedCount == 2);  // the static 20050 allows one per worker
  dyn.ports = {{"a", 0}, {"b", 0}};
  for (int i = 0; i < 200; ++i) {
    auto r = s.place(dyn, "e" + std::to_string(i));
    if (!std::holds_alternative<Placement>(r)) break;
    const Placement& p = std::get<Placement>(r);
    for (const auto& port : p.ports) CHECK(used[p.worker].insert(port.value).second);
    ++placedCount;
  }
  // 100 ports per worker, 3 taken there by the first round: 97 left, 48 pairs per worker.
  CHECK(placedCount == 2 + 2 * 48);
  CHECK(failed(s.place(dyn, "e-last")).message() == "0/2 workers are available: 2 no free dynamic port.");
  state.removeAlloc("e0");
  CHECK(std::holds_alternative<Placement>(s.place(dyn, "e-again")));
}

TEST_CASE("scheduler: bin-packing fills the busiest worker first") {
  ClusterState state;
  for (int i = 0; i < 4; ++i) state.upsertWorker(makeWorker("w-" + std::to_string(i)));
  Scheduler s(state, scoreAll());
  std::map<std::string, int> perWorker;
  for (int i = 0; i < 16; ++i) {
    auto req = request(1000, 2 * kGi);
    req.jobKey = "default/job" + std::to_string(i);  // distinct jobs: no anti-affinity
    ++perWorker[placed(s.place(req, "a" + std::to_string(i))).worker];
  }
  // Each worker holds 4; bin-packing fills one before starting the next.
  CHECK(perWorker.size() == 4);
  for (auto& [w, n] : perWorker) CHECK(n == 4);

  ClusterState packed;
  for (int i = 0; i < 4; ++i) packed.upsertWorker(makeWorker("w-" + std::to_string(i)));
  Scheduler p(packed, scoreAll());
  std::string first = placed(p.place(request(500, kGi), "x0")).worker;
  auto other = request(500, kGi);
  other.jobKey = "default/other";
  CHECK(placed(p.place(other, "x1")).worker == first);
}

TEST_CASE("scheduler: the spread algorithm picks the least loaded worker") {
  ClusterState state;
  for (int i = 0; i < 4; ++i) state.upsertWorker(makeWorker("w-" + std::to_string(i)));
  Scheduler s(state, scoreAll());
  std::map<std::string, int> perWorker;
  for (int i = 0; i < 8; ++i) {
    auto req = request(500, kGi);
    req.jobKey = "default/job" + std::to_string(i);
    req.spreadAlgorithm = true;
    ++perWorker[placed(s.place(req, "a" + std::to_string(i))).worker];
  }
  CHECK(perWorker.size() == 4);
  for (auto& [w, n] : perWorker) CHECK(n == 2);
}

TEST_CASE("scheduler: job anti-affinity moves a group's allocations apart") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-1"));
  state.upsertWorker(makeWorker("w-2"));
  Scheduler s(state, scoreAll());
  auto req = request();
  req.groupCount = 2;
  std::string first = placed(s.place(req, "a1")).worker;
  CHECK(placed(s.place(req, "a2")).worker != first);
}

TEST_CASE("scheduler: affinities weigh workers by their labels") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-ssd", 4000, 8 * kGi, {{"disk", "ssd"}}));
  state.upsertWorker(makeWorker("w-hdd", 4000, 8 * kGi, {{"disk", "hdd"}}));
  state.upsertWorker(makeWorker("w-old", 4000, 8 * kGi, {{"disk", "hdd"}, {"gen", "old"}}));
  Scheduler s(state, scoreAll());
  auto req = request();
  req.affinities = {{{"disk", "In", {"ssd"}}, 80}};
  CHECK(placed(s.place(req, "a1")).worker == "w-ssd");

  // Matching weights add up: ssd 40 + new 30 = 70 beats hdd 30 + new 30 = 60 beats old 30.
  auto weighted = request();
  weighted.jobKey = "default/weighted";
  weighted.affinities = {{{"disk", "In", {"ssd"}}, 40}, {{"disk", "In", {"hdd"}}, 30}, {{"gen", "DoesNotExist", {}}, 30}};
  CHECK(placed(s.place(weighted, "b1")).worker == "w-ssd");  // 40 + 30 > 30 + 30 > 30
  state.removeAlloc("b1");
  state.removeAlloc("a1");
  weighted.affinities = {{{"disk", "In", {"ssd"}}, 20}, {{"disk", "In", {"hdd"}}, 30}, {{"gen", "DoesNotExist", {}}, 30}};
  CHECK(placed(s.place(weighted, "b2")).worker == "w-hdd");  // 60 beats ssd's 50 and old's 30
  // A negative weight pushes workers away.
  auto avoid = request();
  avoid.jobKey = "default/avoid";
  avoid.affinities = {{{"disk", "In", {"hdd"}}, -50}};
  CHECK(placed(s.place(avoid, "c1")).worker == "w-ssd");
}

TEST_CASE("scheduler: even spread across a label's values") {
  ClusterState state;
  const char* zones[] = {"a", "b", "c"};
  for (int i = 0; i < 12; ++i) state.upsertWorker(makeWorker("w-" + std::to_string(i), 64000, 256 * kGi, {{"zone", zones[i % 3]}}));
  Scheduler s(state, scoreAll());
  auto req = request();
  req.spreads = {{"zone", 100, {}}};
  req.groupCount = 9;
  std::map<std::string, int> perZone;
  for (int i = 0; i < 9; ++i) {
    Placement p = placed(s.place(req, "a" + std::to_string(i)));
    ++perZone[state.worker(p.worker)->labels.at("zone")];
    int lo = 1 << 30, hi = 0;
    for (const char* z : zones) {
      lo = std::min(lo, perZone[z]);
      hi = std::max(hi, perZone[z]);
    }
    CHECK(hi - lo <= 1);
  }
  CHECK(perZone == std::map<std::string, int>{{"a", 3}, {"b", 3}, {"c", 3}});
}

TEST_CASE("scheduler: spread targets are met within one allocation at every step") {
  ClusterState state;
  for (int i = 0; i < 20; ++i) {
    state.upsertWorker(makeWorker("w-" + std::to_string(i), 64000, 256 * kGi, {{"dc", i % 2 == 0 ? "east" : "west"}}));
  }
  SchedulerOptions o;  // the default limit, as the operator uses it
  Scheduler s(state, o);
  auto req = request();
  req.groupCount = 10;
  req.spreads = {{"dc", 100, {{"east", 70}, {"west", 30}}}};
  int east = 0;
  for (int i = 0; i < 10; ++i) {
    Placement p = placed(s.place(req, "a" + std::to_string(i)));
    if (state.worker(p.worker)->labels.at("dc") == "east") ++east;
    double want = 0.7 * (i + 1);
    CHECK(std::abs(east - want) <= 1.0);
  }
  CHECK(east == 7);
}

TEST_CASE("scheduler: penalty workers come last but are still used") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-bad"));
  state.upsertWorker(makeWorker("w-good", 1000, kGi));
  Scheduler s(state, scoreAll());
  auto req = request(500, 512 << 20);
  req.penaltyWorkers = {"w-bad"};
  CHECK(placed(s.place(req, "a1")).worker == "w-good");
  CHECK(placed(s.place(req, "a2")).worker == "w-good");
  CHECK(placed(s.place(req, "a3")).worker == "w-bad");  // w-good is full
}

TEST_CASE("scheduler: preemption evicts only allocations at least 10 priorities lower") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-1", 4000, 8 * kGi));
  state.upsertWorker(makeWorker("w-2", 4000, 8 * kGi));
  auto hold = [&](const std::string& uid, const std::string& worker, int priority, int64_t cpu) {
    AllocInfo a;
    a.uid = uid;
    a.worker = worker;
    a.jobKey = "default/low-" + uid;
    a.group = "g";
    a.priority = priority;
    a.cpuMilli = cpu;
    a.memoryBytes = kGi;
    state.addAlloc(a);
  };
  hold("w1-a", "w-1", 45, 2000);
  hold("w1-b", "w-1", 45, 2000);
  hold("w2-a", "w-2", 20, 1000);
  hold("w2-b", "w-2", 30, 1000);
  hold("w2-c", "w-2", 30, 2000);
  Scheduler s(state, scoreAll());

  auto req = request(2000, kGi);
  req.jobKey = "default/important";
  req.priority = 50;  // w-1's allocations are only 5 below: untouchable
  req.allowPreemption = false;
  CHECK(failed(s.place(req, "p0")).reasons.at("insufficient cpu") == 2);
  req.allowPreemption = true;
  Placement p = placed(s.place(req, "p1"));
  CHECK(p.worker == "w-2");
  // One eviction suffices (w2-c frees 2000m); fewer beats lower priority.
  CHECK(p.preempted == std::vector<std::string>{"w2-c"});
  CHECK(state.alloc("w2-c") == nullptr);
  CHECK(state.alloc("w1-a") != nullptr);

  auto more = request(2000, kGi);
  more.jobKey = "default/important";
  more.priority = 50;
  Placement q = placed(s.place(more, "p2"));
  CHECK(q.worker == "w-2");
  // Two 1000m victims needed now: the lowest priority ones, both.
  CHECK(std::set<std::string>(q.preempted.begin(), q.preempted.end()) == std::set<std::string>{"w2-a", "w2-b"});

  auto equal = request(2000, kGi);
  equal.jobKey = "default/peer";
  equal.priority = 50;
  auto f = failed(s.place(equal, "p3"));  // what is left is priority 45 and 50
  CHECK(f.reasons.at("insufficient cpu") == 2);
}

TEST_CASE("scheduler: a stopping allocation keeps its resources and is no preemption victim") {
  // A stop-first update creates the replacement while the old allocation runs out its kill
  // timeout: the old one's cpu, memory and ports stay taken until it is terminal.
  ClusterState state;
  state.upsertWorker(makeWorker("w-1", 4000, 8 * kGi));
  AllocInfo old;
  old.uid = "default/web-app-0-0";
  old.worker = "w-1";
  old.jobKey = "default/web";
  old.group = "g";
  old.priority = 10;
  old.cpuMilli = 3000;
  old.memoryBytes = kGi;
  old.ports = {{"http", 8080}};
  old.stopping = true;
  state.addAlloc(old);
  Scheduler s(state, scoreAll());
  auto req = request(2000, kGi);
  req.jobKey = "default/web";
  req.group = "g";
  req.priority = 50;  // 40 above: it would evict the old one, were it not already stopping
  PlacementFailure f = failed(s.place(req, "default/web-app-0-1"));
  CHECK(f.reasons.at("insufficient cpu") == 1);
  CHECK(state.alloc("default/web-app-0-0") != nullptr);
  auto port = request(100, kGi);
  port.ports = {{"http", 8080}};
  port.allowPreemption = false;
  CHECK(failed(s.place(port, "default/other-0")).reasons.size() == 1);
  // Once it is terminal (the informer's copy says so), the replacement fits.
  state.removeAlloc("default/web-app-0-0");
  CHECK(placed(s.place(req, "default/web-app-0-1")).worker == "w-1");
}

TEST_CASE("scheduler: preemption frees GPUs and ports too") {
  ClusterState state;
  WorkerInfo w = makeWorker("w-gpu", 64000, 256 * kGi);
  w.gpus = fakeGpus(1, "nvidia", "A100", 40 * kGi);
  state.upsertWorker(w);
  Scheduler s(state, scoreAll());
  auto low = request();
  low.jobKey = "default/low";
  low.priority = 10;
  low.gpus.count = 1;
  low.gpus.vendor = "nvidia";
  low.ports = {{"http", 9000}};
  CHECK(placed(s.place(low, "low-1")).gpus.size() == 1);
  auto high = low;
  high.jobKey = "default/high";
  high.priority = 90;
  Placement p = placed(s.place(high, "high-1"));
  CHECK(p.preempted == std::vector<std::string>{"low-1"});
  CHECK(p.gpus.size() == 1);
  CHECK(p.ports.at(0).value == 9000);
}

TEST_CASE("scheduler: failure messages count reasons, most common first") {
  PlacementFailure f;
  f.workersEvaluated = 12;
  f.reasons = {{"missing nvidia.com/gpu", 5}, {"insufficient memory", 7}};
  CHECK(f.message() == "0/12 workers are available: 7 insufficient memory, 5 missing nvidia.com/gpu.");
  f.reasons = {{"b", 2}, {"a", 2}, {"c", 3}};
  CHECK(f.message() == "0/12 workers are available: 3 c, 2 a, 2 b.");
  PlacementFailure none;
  CHECK(none.message() == "0/0 workers are available.");

  ClusterState state;
  for (int i = 0; i < 7; ++i) state.upsertWorker(makeWorker("w-small-" + std::to_string(i), 4000, kGi));
  for (int i = 0; i < 5; ++i) state.upsertWorker(makeWorker("w-big-" + std::to_string(i), 4000, 64 * kGi));
  Scheduler s(state);
  auto req = request(100, 2 * kGi);
  req.gpus.count = 1;
  req.gpus.vendor = "nvidia";
  CHECK(failed(s.place(req, "a1")).message() ==
        "0/12 workers are available: 7 insufficient memory, 5 missing nvidia.com/gpu.");
}

TEST_CASE("scheduler: placeOn and infeasibleReason for one worker") {
  ClusterState state;
  state.upsertWorker(makeWorker("w-1", 1000, kGi));
  state.upsertWorker(makeWorker("w-2", 1000, kGi));
  Scheduler s(state);
  auto req = request(800, 512 << 20);
  req.ports = {{"http", 0}};
  Placement p = placed(s.placeOn(req, "sys-1", "w-2"));
  CHECK(p.worker == "w-2");
  CHECK(p.ports.size() == 1);
  CHECK(failed(s.placeOn(req, "sys-2", "w-2")).message() == "0/1 workers are available: 1 insufficient cpu.");
  CHECK(failed(s.placeOn(req, "sys-3", "w-nope")).message() == "0/1 workers are available: 1 unknown worker.");
  CHECK(s.infeasibleReason(req, "w-nope") == "unknown worker");
}

TEST_CASE("scheduler: state follows workers and allocations coming and going") {
  ClusterState state;
  state.reserve(3, 8);  // a hint only
  state.upsertWorker(makeWorker("w-1", 1000, kGi));
  state.upsertWorker(makeWorker("w-2", 1000, kGi));
  CHECK(state.workerCount() == 2);
  Scheduler s(state);
  // An allocation recorded before its worker is known still counts once the worker arrives.
  AllocInfo early;
  early.uid = "early";
  early.worker = "w-3";
  early.jobKey = "default/x";
  early.group = "g";
  early.cpuMilli = 1000;
  early.memoryBytes = kGi;
  state.addAlloc(early);
  state.upsertWorker(makeWorker("w-3", 1000, kGi));
  CHECK(s.infeasibleReason(request(100, 1), "w-3") == "insufficient cpu");
  // Replacing an allocation by uid does not double-count it.
  early.cpuMilli = 500;
  early.memoryBytes = kGi / 2;
  state.addAlloc(early);
  CHECK(state.allocCount() == 1);
  CHECK(s.infeasibleReason(request(500, 1), "w-3") == std::nullopt);

  state.removeWorker("w-1");
  CHECK(state.workerCount() == 2);
  CHECK(state.worker("w-1") == nullptr);
  for (int i = 0; i < 2; ++i) CHECK(placed(s.place(request(500, 1), "a" + std::to_string(i))).worker != "w-1");
  state.removeAlloc("early");
  state.removeAlloc("nonexistent");  // harmless
  CHECK(state.allocCount() == 2);
  // Moved-from and moved-into states keep working.
  ClusterState moved = std::move(state);
  CHECK(moved.workerCount() == 2);
  CHECK(moved.alloc("a0") != nullptr);
}

TEST_CASE("scheduler: the default limit fills a big cluster to the last slot") {
  ClusterState state;
  for (int i = 0; i < 1000; ++i) state.upsertWorker(makeWorker("w-" + std::to_string(i), 2000, 4 * kGi));
  Scheduler s(state);  // scores 10 feasible workers per placement
  std::map<std::string, int> perWorker;
  for (int i = 0; i < 4000; ++i) ++perWorker[placed(s.place(request(500, kGi), "a" + std::to_string(i))).worker];
  CHECK(perWorker.size() == 1000);
  CHECK(state.allocCount() == 4000);
  CHECK(failed(s.place(request(500, kGi), "one-too-many")).message() ==
        "0/1000 workers are available: 1000 insufficient cpu.");
}

// 10,000 random requests, with removals, label changes and preemptions in between, against a
// small cluster: after every 100 requests the allocations themselves are audited. No worker ever
// holds more cpu, memory, GPUs or ports than it has, and every placement honours its GPU model.
TEST_CASE("scheduler: random requests never over-commit a worker") {
  std::mt19937_64 rng(42);
  ClusterState state;
  std::vector<WorkerInfo> workers;
  for (int i = 0; i < 20; ++i) {
    WorkerInfo w = makeWorker("w-" + std::to_string(i), 1000 + 500 * (i % 5), (1 + i % 4) * kGi,
                              {{"zone", std::string(1, static_cast<char>('a' + i % 3))}});
    if (i % 4 == 0) w.gpus = fakeGpus(2 + i % 3, "nvidia", i % 8 == 0 ? "A100" : "T4", 40 * kGi);
    if (i % 7 == 3) w.ready = false;
    workers.push_back(w);
    state.upsertWorker(w);
  }
  SchedulerOptions o;
  o.dynamicPortMin = 30000;
  o.dynamicPortMax = 30019;  // a small range, to make conflicts likely
  Scheduler s(state, o);
  std::vector<std::string> live;
  int placements = 0, preemptions = 0, failures = 0;

  auto audit = [&] {
    std::map<std::string, int64_t> cpu, memory;
    std::map<std::string, std::set<int>> gpus, ports;
    for (const auto& uid : live) {
      const AllocInfo* a = state.alloc(uid);
      REQUIRE(a != nullptr);
      cpu[a->worker] += a->cpuMilli;
      memory[a->worker] += a->memoryBytes;
      for (const auto& g : a->gpus) CHECK(gpus[a->worker].insert(g.index).second);
      for (const auto& p : a->ports) CHECK(ports[a->worker].insert(p.value).second);
    }
    CHECK(state.allocCount() == live.size());
    for (const auto& w : workers) {
      CHECK(cpu[w.name] <= w.cpuMilli);
      CHECK(memory[w.name] <= w.memoryBytes);
      CHECK(gpus[w.name].size() <= w.gpus.size());
    }
  };

  for (int i = 0; i < 10000; ++i) {
    while (!live.empty() && rng() % 3 == 0) {
      size_t k = rng() % live.size();
      state.removeAlloc(live[k]);
      live[k] = live.back();
      live.pop_back();
    }
    if (rng() % 500 == 0) {  // a worker moves zone or flips readiness: indexes must follow
      WorkerInfo& w = workers[static_cast<size_t>(rng() % workers.size())];
      w.labels["zone"] = std::string(1, static_cast<char>('a' + rng() % 3));
      if (rng() % 4 == 0) w.ready = !w.ready;
      state.upsertWorker(w);
    }
    PlacementRequest r = request(static_cast<int64_t>(50 + rng() % 800), static_cast<int64_t>(64 + rng() % 1024) << 20);
    r.jobKey = "default/job" + std::to_string(rng() % 10);
    r.group = "g" + std::to_string(rng() % 2);
    r.priority = static_cast<int>(rng() % 100);
    bool wantsA100 = false;
    if (rng() % 5 == 0) {
      r.gpus.count = 1 + static_cast<int>(rng() % 2);
      r.gpus.vendor = "nvidia";
      wantsA100 = rng() % 2 == 0;
      if (wantsA100) r.gpus.models = {"A100"};
    }
    if (rng() % 3 == 0) r.ports.push_back({"dyn", 0});
    if (rng() % 10 == 0) r.ports.push_back({"static", 30000 + static_cast<int>(rng() % 5)});
    if (rng() % 10 == 0) r.spreads = {{"zone", 50, {}}};
    if (rng() % 10 == 0) r.affinities = {{{"zone", "In", {"a"}}, 50}};
    if (rng() % 20 == 0) r.constraints.push_back({"", "DistinctHosts", {}});
    std::string uid = "u" + std::to_string(i);
    auto result = s.place(r, uid);
    if (const auto* p = std::get_if<Placement>(&result)) {
      ++placements;
      CHECK(state.worker(p->worker)->ready);
      CHECK(static_cast<int>(p->gpus.size()) == r.gpus.count);
      for (const auto& g : p->gpus) {
        if (wantsA100) CHECK(g.model == "A100");
      }
      for (const auto& victim : p->preempted) {
        ++preemptions;
        std::erase(live, victim);
      }
      live.push_back(uid);
    } else {
      ++failures;
    }
    if (i % 100 == 99) audit();
  }
  audit();
  CHECK(placements > 3000);
  CHECK(failures > 100);  // the cluster was really under pressure
  CHECK(preemptions > 0);
}

}  // namespace
}  // namespace scheduler
