// RestClient over the real cpprest HttpClient against FakeApiServer (plain HTTP on port 0).
#include "kube/rest_client.h"

#include <doctest/doctest.h>

#include "tests/kube/fake_api_server.h"

namespace kube {
namespace {

using testing::FakeApiServer;

const ResourceRef kPods{"", "v1", "pods", "default", "", ""};
const ResourceRef kDeployments{"apps", "v1", "deployments", "default", "", ""};

Json J(const std::string& text) {
  auto r = parseJson(text);
  REQUIRE(r.isOk());
  return std::move(*r);
}

Json pod(const std::string& name, const std::string& labels = "{}") {
  return J(R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":")" + name +
           R"(","namespace":"default","labels":)" + labels + R"(},"spec":{"nodeName":"n1"}})");
}

RestClientPtr clientFor(const FakeApiServer& fake) {
  RestConfig cfg;
  cfg.server = fake.url();
  cfg.bearerToken = "tok";
  auto http = newHttpClient(cfg);
  REQUIRE_MESSAGE(http.isOk(), http.status().toString());
  return std::make_shared<RestClient>(*http);
}

TEST_CASE("rest: resource paths for core and named groups") {
  CHECK(ResourceRef{"", "v1", "pods", "default", "web", ""}.path() == "/api/v1/namespaces/default/pods/web");
  CHECK(ResourceRef{"", "v1", "nodes", "", "n1", "status"}.path() == "/api/v1/nodes/n1/status");
  CHECK(ResourceRef{"", "v1", "pods", "", "", ""}.path() == "/api/v1/pods");
  CHECK(ResourceRef{"apps", "v1", "deployments", "prod", "", ""}.path() == "/apis/apps/v1/namespaces/prod/deployments");
  CHECK(ResourceRef{"coordination.k8s.io", "v1", "leases", "kube-system", "x", ""}.path() ==
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x");
  ListOptions o;
  o.labelSelector = "a in (x,y),!b";
  o.limit = 2;
  o.continueToken = "tok/1";
  CHECK(listQuery(o, false) == "labelSelector=a%20in%20%28x%2Cy%29%2C%21b&limit=2&continue=tok%2F1");
  o = {};
  o.resourceVersion = "42";
  o.timeoutSeconds = 30;
  o.allowWatchBookmarks = true;
  CHECK(listQuery(o, true) == "watch=true&resourceVersion=42&timeoutSeconds=30&allowWatchBookmarks=true");
}

TEST_CASE("rest: error bodies decode into Status") {
  Status st = statusFromResponse(
      409, R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"boom","reason":"Conflict","code":409})");
  CHECK(st.code() == 409);
  CHECK(st.reason() == "Conflict");
  CHECK(st.message() == "boom");
  Status plain = statusFromResponse(503, "upstream down");
  CHECK(plain.code() == 503);
  CHECK(plain.reason() == "ServiceUnavailable");
  CHECK(plain.message() == "upstream down");
}

TEST_CASE("rest: create, get, update with conflicts, status, patch and delete") {
  FakeApiServer fake;
  auto client = clientFor(fake);

  auto created = client->create(kPods, pod("web"));
  REQUIRE_MESSAGE(created.isOk(), created.status().toString());
  CHECK(name(*created) == "web");
  std::string rv1 = resourceVersion(*created);
  CHECK_FALSE(rv1.empty());

  auto dup = client->create(kPods, pod("web"));
  REQUIRE_FALSE(dup.isOk());
  CHECK(dup.status().code() == 409);
  CHECK(dup.status().reason() == "AlreadyExists");

  auto got = client->get(kPods.withName("web"));
  REQUIRE(got.isOk());
  CHECK(getString(*got, {"spec", "nodeName"}) == "n1");

  auto missing = client->get(kPods.withName("nope"));
  REQUIRE_FALSE(missing.isOk());
  CHECK(missing.status().code() == 404);
  CHECK(missing.status().reason() == "NotFound");
  CHECK(missing.status().message().find("nope") != std::string::npos);

  // Update with the current resourceVersion succeeds; replaying the stale one conflicts.
  Json edit = cloneJson(*got);
  setString(*find(edit, {"spec"}), "nodeName", "n2", edit.GetAllocator());
  auto updated = client->update(kPods, edit);
  REQUIRE_MESSAGE(updated.isOk(), updated.status().toString());
  CHECK(getString(*updated, {"spec", "nodeName"}) == "n2");
  auto stale = client->update(kPods, edit);
  REQUIRE_FALSE(stale.isOk());
  CHECK(stale.status().code() == 409);
  CHECK(stale.status().reason() == "Conflict");

  // Status subresource.
  Json withStatus = cloneJson(*updated);
  Json phase = J(R"({"phase":"Running"})");
  setMember(withStatus, "status", JsonValue(phase, withStatus.GetAllocator()), withStatus.GetAllocator());
  auto st = client->updateStatus(kPods, withStatus);
  REQUIRE_MESSAGE(st.isOk(), st.status().toString());
  CHECK(getString(*st, {"status", "phase"}) == "Running");
  auto ps = client->patchStatus(kPods.withName("web"), PatchType::kMerge, R"({"status":{"podIP":"10.0.0.5"}})");
  REQUIRE(ps.isOk());
  CHECK(getString(*ps, {"status", "podIP"}) == "10.0.0.5");
  CHECK(getString(*ps, {"status", "phase"}) == "Running");

  // Patches carry the right media type and apply parameters.
  auto merged = client->patch(kPods.withName("web"), PatchType::kMerge, R"({"metadata":{"labels":{"x":"1"}}})");
  REQUIRE(merged.isOk());
  CHECK(getString(*merged, {"metadata", "labels", "x"}) == "1");
  CHECK(client->patch(kPods.withName("web"), PatchType::kStrategicMerge, "{}").isOk());
  CHECK(client->patch(kPods.withName("web"), PatchType::kJson, "[]").isOk());
  PatchOptions apply;
  apply.fieldManager = "foxden";
  apply.force = true;
  CHECK(client->patch(kPods.withName("web"), PatchType::kApply, "{}", apply).isOk());
  CHECK_FALSE(client->patch(kPods.withName("web"), PatchType::kApply, "{}").isOk());  // no fieldManager

  std::vector<std::string> types;
  std::string applyQuery;
  for (const auto& r : fake.requests()) {
    if (r.method == "PATCH") types.push_back(r.contentType);
    if (r.method == "PATCH" && r.contentType == "application/apply-patch+yaml") applyQuery = r.query;
    if (r.method == "POST" || r.method == "PUT") CHECK(r.contentType == "application/json");
  }
  CHECK(types == std::vector<std::string>{"application/merge-patch+json", "application/merge-patch+json",
                                          "application/strategic-merge-patch+json", "application/json-patch+json",
                                          "application/apply-patch+yaml"});
  CHECK(applyQuery == "fieldManager=foxden&force=true");

  // Delete with preconditions: a wrong uid is refused, the right one deletes.
  DeleteOptions wrong;
  wrong.preconditionUid = "other";
  auto refused = client->remove(kPods.withName("web"), wrong);
  REQUIRE_FALSE(refused.isOk());
  CHECK(refused.status().code() == 409);
  DeleteOptions right;
  right.preconditionUid = uid(*created);
  right.propagationPolicy = "Foreground";
  auto deleted = client->remove(kPods.withName("web"), right);
  REQUIRE_MESSAGE(deleted.isOk(), deleted.status().toString());
  auto lastDelete = fake.requests().back();
  auto body = J(lastDelete.body);
  CHECK(getString(body, {"kind"}) == "DeleteOptions");
  CHECK(getString(body, {"propagationPolicy"}) == "Foreground");
  CHECK(getString(body, {"preconditions", "uid"}) == uid(*created));
  CHECK(client->get(kPods.withName("web")).status().code() == 404);
}

TEST_CASE("rest: createMany reports each create's outcome in order") {
  FakeApiServer fake;
  auto client = clientFor(fake);
  REQUIRE(client->create(kPods, pod("b")).isOk());
  std::vector<Json> pods;
  for (const char* n : {"a", "b", "c", "d", "e"}) pods.push_back(pod(n));
  std::vector<const JsonValue*> objs;
  for (const auto& p : pods) objs.push_back(&p);
  std::vector<Status> out = client->createMany(kPods, objs, 2);
  REQUIRE(out.size() == 5);
  CHECK(out[0].isOk());
  CHECK(out[1].reason() == "AlreadyExists");  // decoded from the server's Status body
  CHECK(out[2].isOk());
  CHECK(out[3].isOk());
  CHECK(out[4].isOk());
  auto list = client->list(kPods);
  REQUIRE(list.isOk());
  CHECK((*list)["items"].Size() == 5);
  CHECK(client->createMany(kPods, {}).empty());
}

TEST_CASE("rest: list with selectors, paging and listAll") {
  FakeApiServer fake;
  auto client = clientFor(fake);
  for (int i = 0; i < 7; ++i) {
    fake.put("/api/v1/pods", pod("p" + std::to_string(i), i % 2 ? R"({"odd":"yes"})" : R"({"odd":"no"})"));
  }
  ListOptions o;
  o.limit = 3;
  auto page = client->list(kPods, o);
  REQUIRE(page.isOk());
  CHECK(find(*page, {"items"})->Size() == 3);
  CHECK_FALSE(getString(*page, {"metadata", "continue"}).empty());

  auto all = client->listAll(kPods, o);
  REQUIRE_MESSAGE(all.isOk(), all.status().toString());
  CHECK(find(*all, {"items"})->Size() == 7);
  CHECK(getString(*all, {"metadata", "continue"}).empty());
  CHECK_FALSE(getString(*all, {"metadata", "resourceVersion"}).empty());
  CHECK(getString(*all, {"kind"}) == "PodList");
  CHECK(fake.countRequests("GET", "continue=") >= 2);

  ListOptions odd;
  odd.labelSelector = "odd=yes";
  auto filtered = client->listAll(kPods, odd);
  REQUIRE(filtered.isOk());
  CHECK(find(*filtered, {"items"})->Size() == 3);

  // An expired continue token restarts the list once.
  fake.failNext("GET", 0, 0);
  ListOptions two;
  two.limit = 2;
  auto first = client->list(kPods, two);
  REQUIRE(first.isOk());
  two.continueToken = getString(*first, {"metadata", "continue"});
  fake.failNext("GET", 1, 410);
  auto restarted = client->listAll(kPods, two);
  REQUIRE_MESSAGE(restarted.isOk(), restarted.status().toString());
  CHECK(find(*restarted, {"items"})->Size() == 7);
}

TEST_CASE("rest: the bearer token and transport errors") {
  FakeApiServer fake;
  auto client = clientFor(fake);
  CHECK(client->get(kDeployments.withName("x")).status().code() == 404);
  CHECK(fake.requests().back().path == "/apis/apps/v1/namespaces/default/deployments/x");
  CHECK(fake.requests().back().authorization == "Bearer tok");

  RestConfig dead;
  dead.server = "http://127.0.0.1:1";  // nothing listens there
  auto http = newHttpClient(dead);
  REQUIRE(http.isOk());
  RestClient c(*http);
  auto r = c.get(kPods.withName("x"));
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().code() == 503);

  RestConfig badScheme;
  badScheme.server = "ftp://x";
  CHECK_FALSE(newHttpClient(badScheme).isOk());
  RestConfig badPem;
  badPem.server = "https://127.0.0.1:6443";
  badPem.caPem = "not a pem";
  auto bad = newHttpClient(badPem);
  REQUIRE_FALSE(bad.isOk());
  CHECK(bad.status().message().find("certificate authority") != std::string::npos);
}

TEST_CASE("rest: watch streams events line by line and cancels promptly") {
  FakeApiServer fake;
  auto client = clientFor(fake);
  std::string rv = fake.put("/api/v1/pods", pod("a"));
  ListOptions o;
  o.resourceVersion = rv;
  auto canceller = std::make_shared<Canceller>();
  auto s = client->watch(kPods, o, canceller.get());
  REQUIRE_MESSAGE(s.isOk(), s.status().toString());
  CHECK(fake.waitFor([&] { return fake.openWatches() == 1; }));
  fake.put("/api/v1/pods", pod("b"));
  std::string line;
  auto more = (*s)->readLine(line);
  REQUIRE(more.isOk());
  REQUIRE(*more);
  auto ev = J(line);
  CHECK(getString(ev, {"type"}) == "ADDED");
  CHECK(getString(ev, {"object", "metadata", "name"}) == "b");

  // Cancel from another thread while readLine blocks.
  std::thread canceler([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    canceller->cancel();
  });
  auto start = std::chrono::steady_clock::now();
  auto blocked = (*s)->readLine(line);
  canceler.join();
  CHECK_FALSE(blocked.isOk());
  CHECK(blocked.status().code() == kCanceledCode);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  s->reset();
  CHECK(fake.waitFor([&] { return fake.openWatches() == 0; }));

  // An expired resourceVersion answered with HTTP 410 comes back as a Status.
  fake.compact();
  fake.setExpiredAsErrorEvent(false);
  auto gone = client->watch(kPods, o);
  REQUIRE_FALSE(gone.isOk());
  CHECK(gone.status().code() == 410);
  CHECK(gone.status().reason() == "Expired");
}

}  // namespace
}  // namespace kube
