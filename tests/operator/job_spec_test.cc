#include "operator/job/job_spec.h"

#include <doctest/doctest.h>

#include <utility>

#include "kube/yaml.h"

namespace op {
namespace {

kube::Json yaml(const char* text) {
  auto r = kube::yamlToJson(text);
  REQUIRE(r.isOk());
  return std::move(*r);
}

const char* kWeb = R"(
metadata: {name: web, namespace: default}
spec:
  type: service
  constraints: [{key: rack, operator: In, values: [r1]}]
  update: {maxParallel: 2, autoRevert: true, canary: 1}
  groups:
  - name: app
    count: 3
    ports: [{name: http}, {name: admin, static: 9000}]
    tasks:
    - name: server
      command: [/bin/sh]
      resources: {requests: {cpu: 250m, memory: 64Mi}, limits: {nvidia.com/gpu: 1}}
    - name: side
      command: [/bin/true]
      resources: {limits: {cpu: "1", memory: 1Gi}}
)";

TEST_CASE("job spec: reads groups into placement requests") {
  kube::Json j = yaml(kWeb);
  auto s = parseJobSpec(j);
  REQUIRE(s.isOk());
  REQUIRE(s->groups.size() == 1);
  const GroupSpec& g = s->groups[0];
  CHECK(g.count == 3);
  CHECK(g.update.maxParallel == 2);
  CHECK(g.update.autoRevert);
  CHECK(g.update.canary == 1);
  CHECK(g.request.cpuMilli == 1250);                         // request, else limit
  CHECK(g.request.memoryBytes == 64LL * 1024 * 1024 + 1024LL * 1024 * 1024);
  CHECK(g.request.gpus.count == 1);
  CHECK(g.request.gpus.vendor == "nvidia");
  REQUIRE(g.request.ports.size() == 2);
  CHECK(g.request.ports[1].staticPort == 9000);
  REQUIRE(g.request.constraints.size() == 1);                // the job's, merged
  CHECK(g.request.jobKey == "default/web");
  CHECK(g.reschedule.unlimited);                             // service default
}

TEST_CASE("job spec: the version hash ignores count and key order, not the template") {
  kube::Json a = yaml(kWeb);
  kube::Json b = yaml(kWeb);
  b["spec"]["groups"][0]["count"] = 7;
  kube::Json c = yaml(R"(
metadata: {name: web, namespace: default}
spec:
  update: {canary: 1, autoRevert: true, maxParallel: 2}
  constraints: [{values: [r1], operator: In, key: rack}]
  type: service
  groups:
  - tasks:
    - resources: {limits: {nvidia.com/gpu: 1}, requests: {memory: 64Mi, cpu: 250m}}
      command: [/bin/sh]
      name: server
    - {name: side, command: [/bin/true], resources: {limits: {cpu: "1", memory: 1Gi}}}
    name: app
    count: 3
    ports: [{name: http}, {static: 9000, name: admin}]
)");
  kube::Json d = yaml(kWeb);
  d["spec"]["groups"][0]["tasks"][0]["command"][0] = "/bin/bash";
  auto ha = parseJobSpec(a)->templateHash, hb = parseJobSpec(b)->templateHash, hc = parseJobSpec(c)->templateHash,
       hd = parseJobSpec(d)->templateHash;
  CHECK(ha == hb);
  CHECK(ha == hc);
  CHECK(ha != hd);
  CHECK(parseJobSpec(a)->groups[0].hash != parseJobSpec(d)->groups[0].hash);
}

TEST_CASE("job spec: semantically invalid Jobs say why") {
  struct Case {
    const char* patch;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"constraints":[{"key":"cores","operator":"Gt","values":["many"]}]})", "integer"},
      {R"({"constraints":[{"key":"k","operator":"In","values":[]}]})", "at least one value"},
      {R"({"constraints":[{"key":"k","operator":"Exists","values":["x"]}]})", "takes no values"},
      {R"({"type":"batch","schedule":{"cron":"61 * * * *"}})", "minute"},
      {R"({"type":"batch","schedule":{"cron":"* * *"}})", "5 fields"},
      {R"({"type":"batch","schedule":{"cron":"@often"}})", "descriptor"},
      {R"({"type":"batch","schedule":{"cron":"0 3 * * *","timeZone":"Mars/Olympus"}})", "time zone"},
      {R"({"schedule":{"cron":"0 3 * * *"}})", "only batch"},
      {R"({"groups":[{"name":"a","tasks":[{"name":"t","command":["x"]}],"ports":[{"name":"p"},{"name":"p"}]}]})", "duplicate port"},
      {R"({"groups":[{"name":"a","tasks":[{"name":"t","command":["x"]},{"name":"t","command":["y"]}]}]})", "duplicate task"},
      {R"({"groups":[{"name":"a","tasks":[{"name":"t","command":["x"]}]},{"name":"a","tasks":[{"name":"t","command":["x"]}]}]})", "duplicate group"},
      {R"({"groups":[{"name":"a","tasks":[{"name":"t","command":["x"],"resources":{"limits":{"nvidia.com/gpu":"0.5"}}}]}]})", "whole number"},
      {R"({"groups":[{"name":"a","tasks":[{"name":"t","command":["x"],"readinessProbe":{"httpGet":{"port":"web"}}}]}]})", "not one of the group's ports"},
      {R"({"groups":[]})", "at least one group"},
      {R"({"type":"cluster"})", "unknown type"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.patch);
    kube::Json j = yaml(kWeb);
    auto parsedPatch = kube::parseJson(c.patch);
    REQUIRE(parsedPatch.isOk());
    kube::Json& p = *parsedPatch;
    for (const auto& m : std::as_const(p).GetObject()) kube::setMember(j["spec"], kube::view(m.name), kube::JsonValue(m.value, j.GetAllocator()), j.GetAllocator());
    auto s = parseJobSpec(j);
    REQUIRE_FALSE(s.isOk());
    CHECK(s.status().message().find(c.needle) != std::string::npos);
  }
}

TEST_CASE("job spec: a GPU request whose driver no GPU worker offers is invalid") {
  kube::Json j = yaml(kWeb);
  j["spec"]["groups"][0]["tasks"][0].AddMember("driver", "raw_exec", j.GetAllocator());
  std::vector<WorkerOffer> noRaw{{{"exec"}, 2, 0}, {{"exec", "raw_exec"}, 0, 0}};
  auto s = parseJobSpec(j, noRaw);
  REQUIRE_FALSE(s.isOk());
  CHECK(s.status().message().find("raw_exec") != std::string::npos);
  std::vector<WorkerOffer> withRaw{{{"exec", "raw_exec"}, 1, 0}};
  CHECK(parseJobSpec(j, withRaw).isOk());
  CHECK(parseJobSpec(j, {}).isOk());  // no workers known: nothing is impossible yet
}

TEST_CASE("cron: accepts the standard forms") {
  for (const char* c : {"0 3 * * *", "*/5 * * * *", "0 0 1,15 * mon-fri", "0 12 * jan,jul SUN", "@daily", "5-10/2 1 1 1 0"}) {
    CAPTURE(c);
    CHECK(validateCron(c).isOk());
  }
  for (const char* c : {"", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "*/0 * * * *", "10-5 * * * *", "* * * foo *"}) {
    CAPTURE(c);
    CHECK_FALSE(validateCron(c).isOk());
  }
}

TEST_CASE("reschedule delay grows") {
  ReschedulePolicy p;
  p.delaySeconds = 30;
  p.maxDelaySeconds = 3600;
  p.delayFunction = "exponential";
  CHECK(p.delayFor(0) == 30);
  CHECK(p.delayFor(1) == 60);
  CHECK(p.delayFor(3) == 240);
  CHECK(p.delayFor(20) == 3600);
  p.delayFunction = "constant";
  CHECK(p.delayFor(5) == 30);
  p.delayFunction = "fibonacci";
  CHECK(p.delayFor(0) == 30);
  CHECK(p.delayFor(1) == 60);
  CHECK(p.delayFor(2) == 90);
  CHECK(p.delayFor(3) == 150);
}

}  // namespace
}  // namespace op
