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
  while (events.size() < static_cast<size_t>(kThreads * kPerThread) &&
         w.value()->next(events, std::chrono::milliseconds(1000))) {
  }
  REQUIRE(events.size() == static_cast<size_t>(kThreads * kPerThread));
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
