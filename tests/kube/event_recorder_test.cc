#include "kube/event_recorder.h"

#include <doctest/doctest.h>

#include "tests/kube/fake_api_server.h"

namespace kube {
namespace {

using testing::FakeApiServer;
using namespace std::chrono_literals;

RestClientPtr clientFor(const FakeApiServer& fake) {
  RestConfig cfg;
  cfg.server = fake.url();
  auto http = newHttpClient(cfg);
  REQUIRE(http.isOk());
  return std::make_shared<RestClient>(*http);
}

Json object(const char* text) {
  auto r = parseJson(text);
  REQUIRE(r.isOk());
  return std::move(*r);
}

TEST_CASE("event recorder: creates Events and folds repeats into count") {
  FakeApiServer fake;
  EventRecorderOptions o;
  o.component = "foxden-operator";
  o.host = "node-1";
  EventRecorder rec(clientFor(fake), o);
  Json pod = object(R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"prod",
                       "uid":"u-1","resourceVersion":"7"}})");
  rec.event(pod, EventType::kWarning, "BackOff", "restarting failed container");
  rec.event(pod, EventType::kWarning, "BackOff", "restarting failed container");
  rec.event(pod, EventType::kWarning, "BackOff", "restarting failed container");
  rec.event(pod, EventType::kNormal, "Started", "started container");
  REQUIRE(rec.flush(10s));
  CHECK(rec.sent() == 4);
  CHECK(rec.failed() == 0);
  CHECK(rec.dropped() == 0);
  CHECK(fake.countRequests("POST") == 2);
  CHECK(fake.countRequests("PATCH") == 2);

  // Find the BackOff event and check its shape.
  std::string backoffName;
  for (const auto& r : fake.requests()) {
    if (r.method != "POST") continue;
    auto ev = parseJson(r.body);
    REQUIRE(ev.isOk());
    CHECK(r.path == "/api/v1/namespaces/prod/events");
    if (getString(*ev, {"reason"}) == "BackOff") backoffName = name(*ev);
  }
  REQUIRE_FALSE(backoffName.empty());
  CHECK(backoffName.rfind("web.", 0) == 0);
  CHECK(backoffName.size() == std::string("web.").size() + 16);
  JsonPtr ev = fake.object("/api/v1/events", "prod", backoffName);
  REQUIRE(ev);
  CHECK(getString(*ev, {"type"}) == "Warning");
  CHECK(getString(*ev, {"message"}) == "restarting failed container");
  CHECK(getString(*ev, {"involvedObject", "kind"}) == "Pod");
  CHECK(getString(*ev, {"involvedObject", "apiVersion"}) == "v1");
  CHECK(getString(*ev, {"involvedObject", "name"}) == "web");
  CHECK(getString(*ev, {"involvedObject", "namespace"}) == "prod");
  CHECK(getString(*ev, {"involvedObject", "uid"}) == "u-1");
  CHECK(getString(*ev, {"involvedObject", "resourceVersion"}) == "7");
  CHECK(getString(*ev, {"source", "component"}) == "foxden-operator");
  CHECK(getString(*ev, {"source", "host"}) == "node-1");
  CHECK(getInt(*ev, {"count"}) == 3);
  CHECK_FALSE(getString(*ev, {"firstTimestamp"}).empty());
  CHECK_FALSE(getString(*ev, {"lastTimestamp"}).empty());

  // A cluster-scoped object's events go to "default"; a deleted event is recreated.
  Json node = object(R"({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}})");
  rec.event(node, EventType::kNormal, "Ready", "node is ready");
  REQUIRE(rec.flush(10s));
  CHECK(fake.requests().back().path == "/api/v1/namespaces/default/events");
  fake.erase("/api/v1/events", "prod", backoffName);
  rec.event(pod, EventType::kWarning, "BackOff", "restarting failed container");
  REQUIRE(rec.flush(10s));
  CHECK(fake.countRequests("POST") == 4);
}

TEST_CASE("event recorder: never blocks; drops and counts when the queue is full") {
  FakeApiServer fake;
  EventRecorderOptions o;
  o.component = "test";
  o.queueSize = 0;  // nothing fits
  EventRecorder rec(clientFor(fake), o);
  Json pod = object(R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"d"}})");
  for (int i = 0; i < 5; ++i) rec.event(pod, EventType::kNormal, "R", "m");
  CHECK(rec.dropped() == 5);
  REQUIRE(rec.flush(5s));
  CHECK(fake.countRequests("POST") == 0);
}

TEST_CASE("event recorder: API failures are counted, not thrown; stop() drains") {
  FakeApiServer fake;
  EventRecorderOptions o;
  o.component = "test";
  auto rec = std::make_unique<EventRecorder>(clientFor(fake), o);
  fake.failNext("POST", 1, 500);
  Json pod = object(R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"d"}})");
  rec->event(pod, EventType::kNormal, "A", "first");
  rec->event(pod, EventType::kNormal, "B", "second");
  rec->stop();
  CHECK(rec->failed() == 1);
  CHECK(rec->sent() == 1);
  rec->event(pod, EventType::kNormal, "C", "after stop");
  CHECK(rec->dropped() == 1);
}

}  // namespace
}  // namespace kube
