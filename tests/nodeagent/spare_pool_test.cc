#include "nodeagent/spare_pool.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

namespace {

using std::chrono::milliseconds;

std::optional<size_t> takeSoon(nodeagent::SparePool& pool) {
  for (int i = 0; i < 200; ++i) {
    if (auto n = pool.take()) return n;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("spare pool: keeps `size` spares, numbered once each, and refills after a take") {
  std::atomic<int> made{0};
  nodeagent::SparePool pool(2, [&](size_t) { return ++made, true; }, milliseconds(1));
  auto a = takeSoon(pool), b = takeSoon(pool), c = takeSoon(pool);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  CHECK(*a != *b);
  CHECK(*b != *c);
  CHECK(*a != *c);
  pool.stop();
  CHECK(made.load() >= 3);
  CHECK(made.load() <= 5);  // 3 taken, at most 2 ready
}

TEST_CASE("spare pool: size 0 makes nothing and has nothing to give") {
  std::atomic<int> made{0};
  nodeagent::SparePool pool(0, [&](size_t) { return ++made, true; }, milliseconds(1));
  std::this_thread::sleep_for(milliseconds(20));
  CHECK_FALSE(pool.take());
  CHECK(made.load() == 0);
}

TEST_CASE("spare pool: a failed make is retried after the retry delay; its number is not handed out") {
  std::atomic<int> calls{0};
  std::vector<size_t> failed;
  nodeagent::SparePool pool(
      1,
      [&](size_t n) {
        if (++calls == 1) {
          failed.push_back(n);
          return false;
        }
        return true;
      },
      milliseconds(1), milliseconds(5));
  auto n = takeSoon(pool);
  pool.stop();
  REQUIRE(n);
  REQUIRE(failed.size() == 1);
  CHECK(*n != failed[0]);
}

TEST_CASE("spare pool: after stop(), drain() hands back every spare made and not taken") {
  std::atomic<int> made{0};
  nodeagent::SparePool pool(3, [&](size_t) { return ++made, true; }, milliseconds(1));
  for (int i = 0; i < 200 && made.load() < 3; ++i) std::this_thread::sleep_for(milliseconds(10));
  pool.stop();
  auto left = pool.drain();
  CHECK(static_cast<int>(left.size()) == made.load());
  CHECK(pool.drain().empty());
  CHECK_FALSE(pool.take());
}
