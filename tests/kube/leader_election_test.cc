// Leader election against FakeApiServer, with short lease timings.
#include "kube/leader_election.h"

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "kube/timeutil.h"
#include "tests/kube/fake_api_server.h"

namespace kube {
namespace {

using testing::FakeApiServer;
using namespace std::chrono_literals;

const char* kLeases = "/apis/coordination.k8s.io/v1/leases";

RestClientPtr clientFor(const FakeApiServer& fake) {
  RestConfig cfg;
  cfg.server = fake.url();
  auto http = newHttpClient(cfg);
  REQUIRE(http.isOk());
  return std::make_shared<RestClient>(*http);
}

struct Candidate {
  std::string id;
  std::atomic<int> started{0};
  std::atomic<int> stopped{0};
  std::mutex mu;
  std::vector<std::string> leaders;
  std::unique_ptr<LeaderElector> elector;

  Candidate(const FakeApiServer& fake, std::string identity, bool release = true) : id(std::move(identity)) {
    LeaderElectionConfig c;
    c.leaseNamespace = "kube-system";
    c.leaseName = "foxden-operator";
    c.identity = id;
    c.leaseDuration = 1000ms;
    c.renewDeadline = 700ms;
    c.retryPeriod = 100ms;
    c.releaseOnCancel = release;
    c.onStartedLeading = [this] { ++started; };
    c.onStoppedLeading = [this] { ++stopped; };
    c.onNewLeader = [this](const std::string& l) {
      std::lock_guard<std::mutex> g(mu);
      leaders.push_back(l);
    };
    auto e = LeaderElector::create(clientFor(fake), c);
    REQUIRE_MESSAGE(e.isOk(), e.status().toString());
    elector = std::move(*e);
  }
};

TEST_CASE("leader election: configuration is validated like client-go") {
  FakeApiServer fake;
  LeaderElectionConfig c;
  c.leaseNamespace = "ns";
  c.leaseName = "l";
  c.identity = "me";
  CHECK(LeaderElector::create(clientFor(fake), c).isOk());
  auto bad = c;
  bad.renewDeadline = bad.leaseDuration;
  CHECK_FALSE(LeaderElector::create(clientFor(fake), bad).isOk());
  bad = c;
  bad.retryPeriod = 9000ms;
  CHECK_FALSE(LeaderElector::create(clientFor(fake), bad).isOk());
  bad = c;
  bad.identity.clear();
  CHECK_FALSE(LeaderElector::create(clientFor(fake), bad).isOk());
}

TEST_CASE("leader election: exactly one of two candidates leads; release hands over") {
  FakeApiServer fake;
  Candidate a(fake, "node-a");
  Candidate b(fake, "node-b");
  a.elector->start();
  b.elector->start();
  REQUIRE(fake.waitFor([&] { return a.elector->isLeader() || b.elector->isLeader(); }));
  // Hold for a few renewals: never two leaders at once.
  auto until = std::chrono::steady_clock::now() + 600ms;
  bool both = false;
  while (std::chrono::steady_clock::now() < until) {
    both = both || (a.elector->isLeader() && b.elector->isLeader());
    fake.waitFor([] { return false; }, 20ms);
  }
  CHECK_FALSE(both);
  Candidate& leader = a.elector->isLeader() ? a : b;
  Candidate& follower = a.elector->isLeader() ? b : a;
  CHECK(leader.started == 1);
  CHECK(follower.started == 0);
  REQUIRE(fake.waitFor([&] { return follower.elector->leader() == leader.id; }));

  JsonPtr lease = fake.object(kLeases, "kube-system", "foxden-operator");
  REQUIRE(lease);
  CHECK(getString(*lease, {"spec", "holderIdentity"}) == leader.id);
  CHECK(getInt(*lease, {"spec", "leaseDurationSeconds"}) == 1);
  std::string renew = getString(*lease, {"spec", "renewTime"});
  CHECK(renew.size() == std::string("2026-11-22T13:34:44.123456Z").size());  // MicroTime
  CHECK(parseTime(renew).has_value());
  CHECK(parseTime(getString(*lease, {"spec", "acquireTime"})).has_value());
  int64_t transitions = getInt(*lease, {"spec", "leaseTransitions"}).value_or(-1);
  // The leader keeps renewing.
  REQUIRE(fake.waitFor([&] {
    JsonPtr l = fake.object(kLeases, "kube-system", "foxden-operator");
    return l && getString(*l, {"spec", "renewTime"}) != renew;
  }));

  // The leader steps down and releases: the follower takes over well before the lease expires
  // would have let it, and leaseTransitions counts the change.
  auto stopAt = std::chrono::steady_clock::now();
  leader.elector->stop();
  CHECK(leader.stopped == 1);
  CHECK_FALSE(leader.elector->isLeader());
  REQUIRE(fake.waitFor([&] { return follower.elector->isLeader(); }));
  CHECK(std::chrono::steady_clock::now() - stopAt < 5s);
  CHECK(follower.started == 1);
  lease = fake.object(kLeases, "kube-system", "foxden-operator");
  CHECK(getString(*lease, {"spec", "holderIdentity"}) == follower.id);
  CHECK(getInt(*lease, {"spec", "leaseTransitions"}).value_or(-1) == transitions + 1);
  {
    std::lock_guard<std::mutex> g(follower.mu);
    CHECK(follower.leaders.back() == follower.id);
  }
  follower.elector->stop();
  CHECK(follower.stopped == 1);
  lease = fake.object(kLeases, "kube-system", "foxden-operator");
  CHECK(getString(*lease, {"spec", "holderIdentity"}).empty());  // released
}

TEST_CASE("leader election: an expired lease of a dead holder is taken over; a live one is not") {
  FakeApiServer fake;
  auto lease = parseJson(R"({"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
      "metadata":{"name":"foxden-operator","namespace":"kube-system"},
      "spec":{"holderIdentity":"ghost","leaseDurationSeconds":1,"leaseTransitions":4,
              "acquireTime":"2020-01-01T00:00:00.000000Z","renewTime":"2020-01-01T00:00:00.000000Z"}})");
  REQUIRE(lease.isOk());
  fake.put(kLeases, std::move(*lease));
  Candidate c(fake, "node-c");
  auto start = std::chrono::steady_clock::now();
  c.elector->start();
  // Not before the lease duration has passed on our own clock (client-go's skew-safe rule).
  REQUIRE(fake.waitFor([&] { return c.elector->isLeader(); }));
  CHECK(std::chrono::steady_clock::now() - start >= 1000ms);
  JsonPtr now = fake.object(kLeases, "kube-system", "foxden-operator");
  CHECK(getString(*now, {"spec", "holderIdentity"}) == "node-c");
  CHECK(getInt(*now, {"spec", "leaseTransitions"}) == 5);
  {
    std::lock_guard<std::mutex> g(c.mu);
    REQUIRE(c.leaders.size() >= 2);
    CHECK(c.leaders.front() == "ghost");
    CHECK(c.leaders.back() == "node-c");
  }
}

TEST_CASE("leader election: a leader that cannot renew steps down") {
  FakeApiServer fake;
  Candidate a(fake, "node-a", /*release=*/false);
  a.elector->start();
  REQUIRE(fake.waitFor([&] { return a.elector->isLeader(); }));
  // Someone else overwrites the lease (our next update conflicts) and keeps it fresh.
  std::atomic<bool> stop{false};
  std::thread usurper([&] {
    while (!stop) {
      auto l = fake.object(kLeases, "kube-system", "foxden-operator");
      Json next = cloneJson(*l);
      auto& al = next.GetAllocator();
      setString(*find(next, {"spec"}), "holderIdentity", "usurper", al);
      setString(*find(next, {"spec"}), "renewTime", formatMicroTime(Clock::now()), al);
      fake.put(kLeases, std::move(next));
      fake.waitFor([] { return false; }, 50ms);
    }
  });
  REQUIRE(fake.waitFor([&] { return a.elector->finished(); }));
  stop = true;
  usurper.join();
  CHECK_FALSE(a.elector->isLeader());
  CHECK(a.started == 1);
  CHECK(a.stopped == 1);
}

TEST_CASE("leader election: racing candidates never both win (409 on stale resourceVersion)") {
  FakeApiServer fake;
  std::vector<std::unique_ptr<Candidate>> cs;
  for (int i = 0; i < 4; ++i) cs.push_back(std::make_unique<Candidate>(fake, "n" + std::to_string(i)));
  for (auto& c : cs) c->elector->start();
  REQUIRE(fake.waitFor([&] {
    return std::any_of(cs.begin(), cs.end(), [](const auto& c) { return c->elector->isLeader(); });
  }));
  auto until = std::chrono::steady_clock::now() + 500ms;
  int maxLeaders = 0;
  while (std::chrono::steady_clock::now() < until) {
    int n = static_cast<int>(std::count_if(cs.begin(), cs.end(), [](const auto& c) { return c->started > c->stopped; }));
    maxLeaders = std::max(maxLeaders, n);
    fake.waitFor([] { return false; }, 10ms);
  }
  CHECK(maxLeaders == 1);
  int starts = 0;
  for (auto& c : cs) starts += c->started;
  CHECK(starts == 1);
}

}  // namespace
}  // namespace kube
