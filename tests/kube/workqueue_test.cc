#include "kube/workqueue.h"

#include <doctest/doctest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

namespace kube {
namespace {

using namespace std::chrono_literals;

TEST_CASE("workqueue: queued keys are deduplicated and FIFO") {
  WorkQueue q;
  q.add("a");
  q.add("b");
  q.add("a");
  CHECK(q.len() == 2);
  CHECK(*q.get() == "a");
  CHECK(*q.get() == "b");
  CHECK(q.len() == 0);
}

TEST_CASE("workqueue: a key being processed is re-queued only after done()") {
  WorkQueue q;
  q.add("a");
  auto k = q.get();
  REQUIRE(k);
  q.add("a");  // while processing: marked dirty, not handed out
  CHECK(q.len() == 0);
  CHECK_FALSE(q.getFor(50ms));
  q.add("a");  // still only once
  q.done("a");
  CHECK(q.len() == 1);
  CHECK(*q.get() == "a");
  q.done("a");
  CHECK(q.len() == 0);
}

TEST_CASE("workqueue: concurrent workers never hold the same key at once") {
  WorkQueue q;
  std::mutex mu;
  std::set<std::string> inFlight;
  std::atomic<bool> overlap{false};
  std::atomic<int> processed{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      while (auto key = q.get()) {
        {
          std::lock_guard<std::mutex> l(mu);
          if (!inFlight.insert(*key).second) overlap = true;
        }
        std::this_thread::yield();
        {
          std::lock_guard<std::mutex> l(mu);
          inFlight.erase(*key);
        }
        ++processed;
        q.done(*key);
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < 3; ++p) {
    producers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) q.add("k" + std::to_string(i % 5));
    });
  }
  for (auto& t : producers) t.join();
  // Wait until everything added has been drained, then stop the workers.
  for (int i = 0; i < 1000 && q.len() > 0; ++i) std::this_thread::sleep_for(5ms);
  q.shutDown();
  for (auto& t : workers) t.join();
  CHECK_FALSE(overlap.load());
  CHECK(processed.load() >= 5);
}

TEST_CASE("workqueue: shutDown wakes blocked getters") {
  WorkQueue q;
  std::atomic<int> woke{0};
  std::vector<std::thread> getters;
  for (int i = 0; i < 3; ++i) {
    getters.emplace_back([&] {
      if (!q.get()) ++woke;
    });
  }
  q.shutDown();
  for (auto& t : getters) t.join();
  CHECK(woke.load() == 3);
  CHECK(q.shuttingDown());
  q.add("late");
  CHECK(q.len() == 0);
}

TEST_CASE("workqueue: addAfter delays, and the earliest pending delay wins") {
  WorkQueue q;
  auto start = std::chrono::steady_clock::now();
  q.addAfter("x", 100ms);
  q.addAfter("x", 5000ms);  // later: ignored
  CHECK(q.len() == 0);
  auto k = q.getFor(5s);
  REQUIRE(k);
  CHECK(*k == "x");
  CHECK(std::chrono::steady_clock::now() - start >= 100ms);
  q.done("x");
  CHECK_FALSE(q.getFor(50ms));  // the 5 s delay was merged away
  q.addAfter("now", 0ms);
  CHECK(q.len() == 1);
}

TEST_CASE("workqueue: per-key exponential backoff and forget()") {
  RateLimiterOptions o;
  o.baseDelay = 20ms;
  o.maxDelay = 80ms;
  o.qps = 0;
  WorkQueue q(o);
  auto timeOne = [&] {
    auto start = std::chrono::steady_clock::now();
    q.addRateLimited("k");
    auto k = q.getFor(5s);
    REQUIRE(k);
    q.done(*k);
    return std::chrono::steady_clock::now() - start;
  };
  CHECK(timeOne() >= 20ms);
  CHECK(timeOne() >= 40ms);
  CHECK(timeOne() >= 80ms);
  CHECK(q.numRequeues("k") == 3);
  CHECK(timeOne() < 1000ms);  // capped at maxDelay
  q.forget("k");
  CHECK(q.numRequeues("k") == 0);
  auto t = timeOne();
  CHECK(t >= 20ms);
  CHECK(t < 80ms + 500ms);
}

TEST_CASE("workqueue: the default limiter starts at 5ms and grows to 1000s") {
  WorkQueue q;
  q.addRateLimited("a");
  CHECK(q.numRequeues("a") == 1);
  auto k = q.getFor(2s);
  REQUIRE(k);
  q.done(*k);
  for (int i = 0; i < 40; ++i) q.addRateLimited("a");  // far beyond the cap: must not overflow
  CHECK(q.numRequeues("a") == 41);
  CHECK(q.len() == 0);
}

TEST_CASE("workqueue: after shutDown, ready keys drain and then get() returns nullopt") {
  WorkQueue q;
  q.add("a");
  q.shutDown();
  auto k = q.get();
  REQUIRE(k);
  CHECK(*k == "a");
  CHECK_FALSE(q.get());
}

}  // namespace
}  // namespace kube
