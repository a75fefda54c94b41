#include "nodeagent/gc.h"

#include <doctest/doctest.h>

#include <algorithm>

using nodeagent::AllocDirInfo;
using nodeagent::gcPlan;
using nodeagent::GcOptions;

TEST_CASE("gc: active allocations are never collected") {
  GcOptions o;
  o.maxAllocs = 0;
  o.retentionSeconds = 0;
  auto plan = gcPlan({{"a", true, false, 0}, {"b", true, true, 0}}, o, 1000);
  CHECK(plan.empty());
}

TEST_CASE("gc: deleted from the API goes at once; terminal ones by age, then by count, oldest first") {
  GcOptions o;
  o.maxAllocs = 2;
  o.retentionSeconds = 100;
  std::vector<AllocDirInfo> dirs = {
      {"gone", false, false, 990},   // deleted: collected although new
      {"old", false, true, 800},     // past retention
      {"t1", false, true, 950},      // the oldest of the three recent: over the count limit
      {"t2", false, true, 960},
      {"t3", false, true, 970},
      {"run", true, true, 100},      // running: kept whatever its age
  };
  auto plan = gcPlan(dirs, o, 1000);
  std::sort(plan.begin(), plan.end());
  CHECK(plan == std::vector<std::string>{"gone", "old", "t1"});
}
