// Storage: group commit keeps every write's read-modify-write atomic, numbers revisions without
// gaps in commit order, acknowledges only what is durable, and shows watchers every write once.
#include "apiserver/storage.h"

#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/temp_dir.h"

namespace {

using apiserver::Entry;
using apiserver::Mutation;

// A counter stored as its decimal text: each increment reads the current value in the mutator.
kube::StatusOr<Entry> increment(apiserver::Storage& s, const std::string& key) {
  return s.mutate(key, [](const Entry* cur, int64_t) -> kube::StatusOr<Mutation> {
    long v = cur != nullptr ? std::stol(*cur->json) : 0;
    return Mutation::write(std::to_string(v + 1));
  });
}

}  // namespace

TEST_CASE("storage: concurrent read-modify-writes lose nothing and revisions follow commit order") {
  foxden_test::TempDir dir("foxden-storage-test");
  auto opened = apiserver::Storage::open(dir.path + "/state.db");
  REQUIRE(opened);
  auto& s = **opened;
  auto w = s.watch("", s.currentRv());
  REQUIRE(w);

  constexpr int kThreads = 8, kPerThread = 300, kKeys = 5;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto r = increment(s, "core/counters//c" + std::to_string((t + i) % kKeys));
        if (!r) ++failures;
        // A write is visible to readers once acknowledged.
        auto got = s.get("core/counters//c" + std::to_string((t + i) % kKeys));
        if (!got || got->rv < r->rv) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 0);

  long total = 0;
  for (const auto& [key, e] : s.list("core/counters/")) total += std::stol(*e.json);
  CHECK(total == kThreads * kPerThread);
  CHECK(s.currentRv() == kThreads * kPerThread);

  // Every write once, in revision order, each event's old state the previous value of its key.
  std::vector<apiserver::Event> events;
  while (events.size() < static_cast<size_t>(kThreads) * kPerThread &&
         w.value()->next(events, std::chrono::milliseconds(1000))) {
  }
  REQUIRE(events.size() == static_cast<size_t>(kThreads) * kPerThread);
  std::map<std::string, long> last;
  for (size_t i = 0; i < events.size(); ++i) {
    CHECK(events[i].rv == static_cast<int64_t>(i + 1));
    long v = std::stol(*events[i].object);
    CHECK(v == last[events[i].key] + 1);
    CHECK((events[i].type == apiserver::Event::Type::kAdded) == (v == 1));
    last[events[i].key] = v;
  }

  // Durable: a reopened store has the same objects and revision.
  int64_t rv = s.currentRv();
  opened->reset();
  auto again = apiserver::Storage::open(dir.path + "/state.db");
  REQUIRE(again);
  CHECK((*again)->currentRv() == rv);
  long reread = 0;
  for (const auto& [key, e] : (*again)->list("core/counters/")) reread += std::stol(*e.json);
  CHECK(reread == kThreads * kPerThread);
}

TEST_CASE("storage: deletes and refusals under concurrency") {
  foxden_test::TempDir dir("foxden-storage-test");
  auto opened = apiserver::Storage::open(dir.path + "/state.db");
  REQUIRE(opened);
  auto& s = **opened;
  // Create-if-absent from many threads: exactly one wins per key.
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  threads.reserve(6);
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k) {
        auto r = s.mutate("core/things//k" + std::to_string(k), [](const Entry* cur, int64_t) -> kube::StatusOr<Mutation> {
          if (cur != nullptr) return kube::Status::alreadyExists("exists");
          return Mutation::write("x");
        });
        if (r) ++created;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(created.load() == 50);
  CHECK(s.count() == 50);
  // Delete them all concurrently: each delete happens once; deleting a missing key is a no-op.
  threads.clear();
  std::atomic<int> removed{0};
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k) {
        bool mine = false;
        auto r = s.mutate("core/things//k" + std::to_string(k), [&](const Entry* cur, int64_t) -> kube::StatusOr<Mutation> {
          mine = cur != nullptr;
          return Mutation::remove();
        });
        if (r && mine) ++removed;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(removed.load() == 50);
  CHECK(s.count() == 0);
  CHECK(s.currentRv() == 100);
}

TEST_CASE("storage: watchers get their prefix's events of each commit, and a replay starts after its revision") {
  foxden_test::TempDir dir("foxden-storage-test");
  auto opened = apiserver::Storage::open(dir.path + "/state.db");
  REQUIRE(opened);
  auto& s = **opened;
  auto a = s.watch("core/a/", 0);
  auto b = s.watch("core/b/", 0);
  auto small = s.watch("core/", 0, 5);  // overflows: closed, never grows past its bound
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(small);

  // Concurrent writers, so commits carry several writes of both prefixes.
  constexpr int kThreads = 6, kPerThread = 100;
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) (void)increment(s, std::string(t % 2 == 0 ? "core/a/k" : "core/b/k") + std::to_string(t));
    });
  }
  for (auto& t : threads) t.join();

  auto drain = [](apiserver::Watcher& w, size_t want) {
    std::vector<apiserver::Event> out;
    while (out.size() < want && w.next(out, std::chrono::milliseconds(1000))) {
    }
    return out;
  };
  constexpr size_t kEach = static_cast<size_t>(kThreads / 2) * kPerThread;
  auto ea = drain(**a, kEach);
  auto eb = drain(**b, kEach);
  REQUIRE(ea.size() == kEach);
  REQUIRE(eb.size() == kEach);
  for (size_t i = 0; i < kEach; ++i) {
    CHECK(ea[i].key.rfind("core/a/", 0) == 0);
    CHECK(eb[i].key.rfind("core/b/", 0) == 0);
    if (i > 0) {
      CHECK(ea[i].rv > ea[i - 1].rv);
      CHECK(eb[i].rv > eb[i - 1].rv);
    }
  }
  std::vector<apiserver::Event> few;
  (void)(*small)->next(few, std::chrono::milliseconds(0));
  CHECK(few.size() <= 5);
  CHECK((*small)->closed());

  // A watch from revision 300 replays exactly the later writes of its prefix, in order.
  auto late = s.watch("core/b/", 300);
  REQUIRE(late);
  size_t want = 0;
  for (const auto& e : eb) want += e.rv > 300 ? 1 : 0;
  auto el = drain(**late, want);
  REQUIRE(el.size() == want);
  for (const auto& e : el) CHECK(e.rv > 300);
  std::vector<apiserver::Event> extra;
  (void)(*late)->next(extra, std::chrono::milliseconds(0));
  CHECK(extra.empty());
}
