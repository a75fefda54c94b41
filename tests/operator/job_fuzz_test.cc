// Fuzz check: thousands of randomly mutated Jobs (and Allocations) through the job controller's
// pure core, parseJobSpec and planJob. Nothing may crash, throw, or hang; run it under ASan+UBSan.
#include <doctest/doctest.h>

#include <cstdlib>
#include <random>

#include "kube/timeutil.h"
#include "kube/yaml.h"
#include "operator/job/job_plan.h"

namespace op {
namespace {

const char* kBases[] = {
    R"(metadata: {name: web, namespace: default, generation: 3}
spec:
  type: service
  priority: 50
  constraints: [{key: rack, operator: In, values: [r1]}, {operator: DistinctHosts}]
  affinities: [{key: zone, operator: In, values: [a], weight: 20}]
  spread: [{key: zone, targets: [{value: a, percent: 60}]}]
  update: {maxParallel: 1, minHealthySeconds: 1, autoRevert: true, canary: 1}
  promoteVersion: 1
  groups:
  - name: app
    count: 3
    ports: [{name: http}, {name: x, static: 80}]
    reschedulePolicy: {attempts: 2, intervalSeconds: 60, delaySeconds: 1, delayFunction: fibonacci}
    tasks:
    - name: t
      command: [/bin/sh, -c, "sleep 1"]
      resources: {requests: {cpu: 100m, memory: 1Mi}, limits: {nvidia.com/gpu: 1}}
      readinessProbe: {httpGet: {port: http}}
status:
  currentVersion: 1
  stableVersion: 0
  deployment: {version: 1, state: Running, startedAt: "2026-11-22T11:00:00Z"}
  versions: [{version: 0, hash: abc, template: {groups: [{name: app, tasks: [{name: t, command: [x]}]}]}}]
)",
    R"(metadata: {name: once, namespace: default}
spec:
  type: batch
  backoffLimit: 2
  activeDeadlineSeconds: 100
  ttlSecondsAfterFinished: 10
  schedule: {cron: "*/5 * * * *", timeZone: Europe/Berlin}
  groups: [{name: g, count: 2, completions: 4, tasks: [{name: t, command: [x]}]}]
)",
    R"(metadata: {name: sys, namespace: default}
spec:
  type: system
  rollbackTo: {version: 0}
  groups: [{name: g, tasks: [{name: t, command: [x], driver: raw_exec}], constraints: [{key: n, operator: Gt, values: ["3"]}]}]
)",
};

const char* kAlloc = R"(metadata:
  name: web-app-0-1
  namespace: default
  creationTimestamp: "2026-11-22T11:00:00Z"
  annotations: {foxden.io/slot: "0", foxden.io/attempt: "1", foxden.io/template-hash: abc,
                foxden.io/healthy-since: "2026-11-22T11:00:01Z", foxden.io/reschedule-times: "1,2,x"}
spec: {workerName: w1, groupName: app, index: 0, desiredState: run, migrate: true, canary: true,
       tasks: [{name: t, command: [x]}, {name: h, lifecycle: {hook: prestart}}]}
status: {phase: Running, finishedAt: "2026-11-22T11:00:05Z", tasks: [{name: t, state: Running, ready: true}]}
)";

// Replaces a random node with a random value, or deletes a member, `n` times.
void mutate(kube::Json& doc, std::mt19937& rng, int n) {
  auto& a = doc.GetAllocator();
  for (int i = 0; i < n; ++i) {
    std::vector<kube::JsonValue*> nodes;
    std::vector<kube::JsonValue*> stack{&doc};
    while (!stack.empty()) {
      kube::JsonValue* v = stack.back();
      stack.pop_back();
      nodes.push_back(v);
      if (v->IsObject()) {
        for (rapidjson::SizeType k = 0; k < v->MemberCount(); ++k) stack.push_back(&(v->MemberBegin() + k)->value);
      }
      if (v->IsArray()) for (auto& e : v->GetArray()) stack.push_back(&e);
    }
    kube::JsonValue* target = nodes[rng() % nodes.size()];
    if (target == &doc) continue;
    switch (rng() % 10) {
      case 0: target->SetNull(); break;
      case 1: target->SetInt64(static_cast<int64_t>(rng()) - (1LL << 31)); break;
      case 2: target->SetInt64(INT64_MAX); break;
      case 3: target->SetString("", a); break;
      case 4: target->SetString("Gt", a); break;
      case 5: target->SetArray(); break;
      case 6: target->SetObject(); break;
      case 7: target->SetBool(rng() % 2 == 0); break;
      case 8: target->SetDouble(-1.5); break;
      default:
        if (target->IsObject() && target->MemberCount() > 0) {
          target->RemoveMember(target->MemberBegin() + static_cast<long>(rng() % target->MemberCount()));
        } else if (target->IsArray() && !target->Empty()) {
          target->PushBack(kube::JsonValue(*target->Begin(), a), a);
        }
    }
  }
}

TEST_CASE("fuzz: mutated Jobs and Allocations never crash the job controller's core") {
  // FOXDEN_FUZZ_SEED explores other mutations; the default keeps runs reproducible.
  const char* seedEnv = std::getenv("FOXDEN_FUZZ_SEED");
  std::mt19937 rng(seedEnv ? static_cast<unsigned>(std::strtoul(seedEnv, nullptr, 10)) : 42U);
  const TimePoint now = kube::parseTime("2026-11-22T12:00:00Z").value();
  int parsed = 0, planned = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto base = kube::yamlToJson(kBases[iter % 3]);
    REQUIRE(base.isOk());
    kube::Json job = std::move(*base);
    mutate(job, rng, 1 + static_cast<int>(rng() % 4));
    std::vector<WorkerOffer> offers{{{"exec"}, 1, 0}};
    auto spec = parseJobSpec(job, offers);
    if (!spec) {
      CHECK_FALSE(spec.status().message().empty());
      (void)invalidStatus(job, spec.status().message(), now);
      continue;
    }
    ++parsed;
    PlanInput in;
    in.job = kube::shareJson(std::move(job));
    in.spec = &*spec;
    in.now = now;
    in.workers = {"w1", "w2"};
    for (const auto& g : spec->groups) in.eligible[g.name] = {"w1"};
    for (int k = 0; k < 3; ++k) {
      auto al = kube::yamlToJson(kAlloc);
      REQUIRE(al.isOk());
      mutate(*al, rng, static_cast<int>(rng() % 3));
      in.allocs.push_back(viewOf(kube::shareJson(std::move(*al)), *spec));
    }
    Plan p = planJob(in);
    finishStatus(p.status, {{"app", {1, "0/2 workers are available."}}}, 1, now);
    ++planned;
  }
  MESSAGE("mutated Jobs: 3000, parsed: ", parsed, ", planned: ", planned);
  CHECK(planned > 100);
}

}  // namespace
}  // namespace op
