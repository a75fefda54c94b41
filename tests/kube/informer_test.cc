// Informer against FakeApiServer: LIST, WATCH, re-watch on stream end, relist on 410.
#include "kube/informer.h"

#include <doctest/doctest.h>

#include <mutex>
#include <vector>

#include "tests/kube/fake_api_server.h"

namespace kube {
namespace {

using testing::FakeApiServer;
using namespace std::chrono_literals;

const char* kColl = "/api/v1/pods";

Json pod(const std::string& ns, const std::string& name, const std::string& phase = "Pending") {
  auto r = parseJson(R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":")" + name + R"(","namespace":")" + ns +
                     R"("},"status":{"phase":")" + phase + R"("}})");
  REQUIRE(r.isOk());
  return std::move(*r);
}

// Records handler calls as "add ns/name", "update ns/name phase", "delete ns/name".
struct Recorder {
  mutable std::mutex mu;
  std::vector<std::string> log;
  void push(std::string s) {
    std::lock_guard<std::mutex> l(mu);
    log.push_back(std::move(s));
  }
  bool has(const std::string& s) const {
    std::lock_guard<std::mutex> l(mu);
    return std::find(log.begin(), log.end(), s) != log.end();
  }
  size_t count(const std::string& prefix) const {
    std::lock_guard<std::mutex> l(mu);
    return static_cast<size_t>(std::count_if(log.begin(), log.end(),
                                             [&](const std::string& s) { return s.rfind(prefix, 0) == 0; }));
  }
  InformerHandlers handlers() {
    InformerHandlers h;
    h.onAdd = [this](const JsonPtr& o) { push("add " + Informer::keyOf(*o)); };
    h.onUpdate = [this](const JsonPtr& oldObj, const JsonPtr& o) {
      push("update " + Informer::keyOf(*o) + " " + getString(*oldObj, {"status", "phase"}) + "->" +
           getString(*o, {"status", "phase"}));
    };
    h.onDelete = [this](const JsonPtr& o) { push("delete " + Informer::keyOf(*o)); };
    return h;
  }
};

std::unique_ptr<Informer> startInformer(const FakeApiServer& fake, Recorder& rec, int pageSize = 2) {
  RestConfig cfg;
  cfg.server = fake.url();
  auto http = newHttpClient(cfg);
  REQUIRE(http.isOk());
  InformerOptions o;
  o.resource = {"", "v1", "pods", "", "", ""};
  o.pageSize = pageSize;
  o.initialBackoff = 20ms;
  o.maxBackoff = 200ms;
  auto inf = std::make_unique<Informer>(std::make_shared<RestClient>(*http), o);
  inf->addEventHandler(rec.handlers());
  inf->start();
  return inf;
}

TEST_CASE("informer: lists (paged), syncs, then follows the watch") {
  FakeApiServer fake;
  fake.put(kColl, pod("default", "a"));
  fake.put(kColl, pod("default", "b"));
  fake.put(kColl, pod("kube-system", "c"));
  Recorder rec;
  auto inf = startInformer(fake, rec);
  REQUIRE(inf->waitForSync(10s));
  CHECK(inf->hasSynced());
  CHECK(inf->size() == 3);
  CHECK(rec.count("add ") == 3);
  CHECK(fake.countRequests("GET", "continue=") >= 1);  // pageSize 2 over 3 objects
  JsonPtr a = inf->get("default/a");
  REQUIRE(a);
  CHECK(getString(*a, {"kind"}) == "Pod");  // restored on list items
  CHECK(getString(*a, {"apiVersion"}) == "v1");
  CHECK(inf->get("kube-system/c"));

  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.put(kColl, pod("default", "d"));
  fake.put(kColl, pod("default", "a", "Running"));
  fake.erase(kColl, "default", "b");
  REQUIRE(fake.waitFor([&] { return rec.has("delete default/b"); }));
  CHECK(rec.has("add default/d"));
  CHECK(rec.has("update default/a Pending->Running"));
  CHECK(inf->get("default/b") == nullptr);
  CHECK(getString(*inf->get("default/a"), {"status", "phase"}) == "Running");
  CHECK(inf->size() == 3);
  // The watch carried allowWatchBookmarks and timeoutSeconds.
  CHECK(fake.countRequests("GET", "allowWatchBookmarks=true") >= 1);
  CHECK(fake.countRequests("GET", "timeoutSeconds=") >= 1);
  std::string rv = fake.put(kColl, pod("default", "e"));
  REQUIRE(fake.waitFor([&] { return inf->lastSyncResourceVersion() == rv; }));
}

TEST_CASE("informer: bookmarks advance the resourceVersion and a closed stream is re-watched from it") {
  FakeApiServer fake;
  fake.put(kColl, pod("default", "a"));
  Recorder rec;
  auto inf = startInformer(fake, rec);
  REQUIRE(inf->waitForSync(10s));
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.bookmark();
  std::string before = inf->lastSyncResourceVersion();
  REQUIRE(fake.waitFor([&] { return inf->lastSyncResourceVersion() != before; }));
  std::string bookmarkRv = inf->lastSyncResourceVersion();

  fake.endWatches();
  REQUIRE(fake.waitFor([&] { return fake.countRequests("GET", "resourceVersion=" + bookmarkRv) >= 1; }));
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.put(kColl, pod("default", "b"));
  REQUIRE(fake.waitFor([&] { return rec.has("add default/b"); }));
  CHECK(inf->listCount() == 1);  // a normal stream end does not relist
}

TEST_CASE("informer: an ERROR 410 event relists and emits only the difference") {
  FakeApiServer fake;
  fake.put(kColl, pod("default", "keep"));
  fake.put(kColl, pod("default", "change"));
  fake.put(kColl, pod("default", "vanish"));
  Recorder rec;
  auto inf = startInformer(fake, rec);
  REQUIRE(inf->waitForSync(10s));
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  // Changes the watch never reports (history lost), then the server expires the watch.
  fake.put(kColl, pod("default", "change", "Running"), /*emit=*/false);
  fake.erase(kColl, "default", "vanish", /*emit=*/false);
  fake.put(kColl, pod("default", "fresh"), /*emit=*/false);
  fake.compact();
  REQUIRE(fake.waitFor([&] { return inf->listCount() == 2 && rec.has("delete default/vanish"); }));
  CHECK(rec.has("add default/fresh"));
  CHECK(rec.has("update default/change Pending->Running"));
  CHECK(rec.count("update default/keep") == 0);  // unchanged: no event
  CHECK(rec.count("add ") == 4);                  // 3 initial + fresh
  CHECK(inf->size() == 3);
  CHECK(inf->get("default/vanish") == nullptr);
  CHECK(inf->lastError().find("410") != std::string::npos);
  // And it watches again afterwards.
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.put(kColl, pod("default", "later"));
  REQUIRE(fake.waitFor([&] { return rec.has("add default/later"); }));
}

TEST_CASE("informer: an HTTP 410 on re-watch relists too") {
  FakeApiServer fake;
  fake.setExpiredAsErrorEvent(false);
  fake.put(kColl, pod("default", "a"));
  Recorder rec;
  auto inf = startInformer(fake, rec);
  REQUIRE(inf->waitForSync(10s));
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.erase(kColl, "default", "a", /*emit=*/false);
  fake.compact();  // ends the stream; the re-watch from the old RV gets HTTP 410
  REQUIRE(fake.waitFor([&] { return rec.has("delete default/a"); }));
  CHECK(inf->listCount() == 2);
  CHECK(inf->size() == 0);
}

TEST_CASE("informer: errors back off and recover; stop() is prompt with a watch open") {
  FakeApiServer fake;
  fake.put(kColl, pod("default", "a"));
  fake.failNext("GET", 2, 500);  // the first two LISTs fail
  Recorder rec;
  auto inf = startInformer(fake, rec);
  REQUIRE(inf->waitForSync(10s));
  CHECK(inf->listCount() == 3);
  CHECK(inf->lastError().find("500") != std::string::npos);
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  auto start = std::chrono::steady_clock::now();
  inf->stop();
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 0; }));
}

TEST_CASE("informer: a handler added late first receives the cached objects") {
  FakeApiServer fake;
  fake.put(kColl, pod("default", "a"));
  fake.put(kColl, pod("default", "b"));
  Recorder early;
  auto inf = startInformer(fake, early);
  REQUIRE(inf->waitForSync(10s));
  Recorder late;
  inf->addEventHandler(late.handlers());
  CHECK(late.count("add ") == 2);
  REQUIRE(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.put(kColl, pod("default", "c"));
  REQUIRE(fake.waitFor([&] { return late.has("add default/c") && early.has("add default/c"); }));
}

}  // namespace
}  // namespace kube
