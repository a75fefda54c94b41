// scheduler_bench: placements per second of the operator's scheduler (operator/scheduler/), on
// one thread, against a synthetic cluster of --workers workers that already holds allocations.
//
//   plain        cpu/memory requests, bin-pack, the default limit (ceil(log2(workers)))
//   gpu          1 nvidia A100 per request; 20% of workers have 8 GPUs (half A100, half H100)
//   spread       spread over 10 zones + an affinity for a disk label (limit: spreadScoreLimit)
//   fill         2000m/8Gi requests until the cluster is full (the last ones scan far for room)
//   infeasible   a request no worker can take: every worker is diagnosed for the message
//
// Each scenario gets a fresh cluster (not timed); every place() call is timed on its own for the
// percentiles, and their sum gives placements/s. The GPUs are fakes (WorkerInfo entries).
//
// Prints figures and never fails on speed; exits non-zero only if a placement that must succeed
// fails, or a worker ends up over-committed.
//
// Usage: scheduler_bench [--workers N] [--placements N] [--gpu-placements N] [--prefill N]
//                        [--seed S]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "operator/scheduler/scheduler.h"

namespace {

using Clock = std::chrono::steady_clock;
using scheduler::ClusterState;
using scheduler::PlacementRequest;
using scheduler::Scheduler;
using scheduler::SchedulerOptions;

constexpr int64_t kGi = int64_t{1} << 30;

struct Options {
  int workers = 5000;
  int placements = 50000;
  int gpuPlacements = 3000;
  int prefill = 20000;  // allocations already in the cluster before timing starts
  uint64_t seed = 1;
};

std::string cpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::string loadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

ClusterState makeCluster(const Options& o) {
  ClusterState state;
  // As the job controller would: room for what it is about to add (the fill scenario adds most).
  state.reserve(static_cast<size_t>(o.workers), static_cast<size_t>(o.prefill) + static_cast<size_t>(o.workers) * 16);
  for (int i = 0; i < o.workers; ++i) {
    scheduler::WorkerInfo w;
    w.name = "worker-" + std::to_string(i);
    w.ready = i % 100 != 7;  // 1% not ready, as in a real fleet
    w.drivers = {"exec", "raw_exec"};
    w.cpuMilli = 32000;
    w.memoryBytes = 128 * kGi;
    w.labels = {{"zone", "zone-" + std::to_string(i % 10)},
                {"rack", "rack-" + std::to_string(i % 250)},
                {"disk", i % 3 == 0 ? "ssd" : "hdd"}};
    if (i % 5 == 0) {
      std::string model = i % 10 == 0 ? "A100" : "H100";
      for (int g = 0; g < 8; ++g) {
        w.gpus.push_back({"nvidia", g, "GPU-fake-" + std::to_string(i) + "-" + std::to_string(g), model,
                          (model == "A100" ? 40 : 80) * kGi});
      }
      w.labels["foxden.io/gpu-vendor"] = "nvidia";
      w.labels["foxden.io/gpu-model"] = model;
    }
    state.upsertWorker(std::move(w));
  }
  // Existing load: small allocations of many jobs, recorded as the job controller would.
  for (int i = 0; i < o.prefill; ++i) {
    scheduler::AllocInfo a;
    a.uid = "prefill-" + std::to_string(i);
    a.worker = "worker-" + std::to_string((i * 7919) % o.workers);
    a.jobKey = "default/prefill-" + std::to_string(i % 500);
    a.group = "main";
    a.cpuMilli = 500;
    a.memoryBytes = kGi;
    state.addAlloc(std::move(a));
  }
  return state;
}

struct Figures {
  int placed = 0;
  int failed = 0;
  double totalSeconds = 0;
  double p50us = 0, p99us = 0, maxus = 0;
};

template <typename MakeRequest>
Figures run(ClusterState& state, const Options& o, int n, const char* prefix, MakeRequest make,
            bool stopAtFirstFailure = false) {
  Scheduler s(state, SchedulerOptions{.seed = o.seed});
  std::vector<double> us;
  us.reserve(static_cast<size_t>(n));
  std::vector<PlacementRequest> requests;
  requests.reserve(static_cast<size_t>(n));
  std::vector<std::string> uids;
  uids.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    requests.push_back(make(i));
    uids.push_back(std::string(prefix) + std::to_string(i));
  }
  Figures f;
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    auto r = s.place(requests[static_cast<size_t>(i)], uids[static_cast<size_t>(i)]);
    auto t1 = Clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    if (std::holds_alternative<scheduler::Placement>(r)) {
      ++f.placed;
    } else {
      ++f.failed;
      if (stopAtFirstFailure) break;
    }
  }
  for (double u : us) f.totalSeconds += u / 1e6;
  std::sort(us.begin(), us.end());
  if (!us.empty()) {
    f.p50us = us[us.size() / 2];
    f.p99us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
    f.maxus = us.back();
  }
  return f;
}

bool overCommitted(const ClusterState& state, const Options& o, const std::vector<std::string>& prefixes,
                   const std::vector<int>& counts) {
  std::map<std::string, std::pair<int64_t, int64_t>> used;
  auto add = [&](const std::string& uid) {
    if (const auto* a = state.alloc(uid)) {
      used[a->worker].first += a->cpuMilli;
      used[a->worker].second += a->memoryBytes;
    }
  };
  for (int i = 0; i < o.prefill; ++i) add("prefill-" + std::to_string(i));
  for (size_t p = 0; p < prefixes.size(); ++p) {
    for (int i = 0; i < counts[p]; ++i) add(prefixes[p] + std::to_string(i));
  }
  for (const auto& [name, u] : used) {
    const auto* w = state.worker(name);
    if (w == nullptr || u.first > w->cpuMilli || u.second > w->memoryBytes) return true;
  }
  return false;
}

void print(const char* name, const Figures& f) {
  if (f.placed + f.failed == 0) {
    std::printf("%-11s skipped (nothing to place in a cluster this small)\n", name);
    return;
  }
  std::printf("%-11s %7d placed %5d failed  %9.0f placements/s  p50 %7.1f us  p99 %7.1f us  max %8.1f us\n", name,
              f.placed, f.failed, (f.placed + f.failed) / f.totalSeconds, f.p50us, f.p99us, f.maxus);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto next = [&](const char* flag) -> long long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag);
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (std::strcmp(argv[i], "--workers") == 0) o.workers = static_cast<int>(next("--workers"));
    else if (std::strcmp(argv[i], "--placements") == 0) o.placements = static_cast<int>(next("--placements"));
    else if (std::strcmp(argv[i], "--gpu-placements") == 0) o.gpuPlacements = static_cast<int>(next("--gpu-placements"));
    else if (std::strcmp(argv[i], "--prefill") == 0) o.prefill = static_cast<int>(next("--prefill"));
    else if (std::strcmp(argv[i], "--seed") == 0) o.seed = static_cast<uint64_t>(next("--seed"));
    else {
      std::fprintf(stderr, "usage: %s [--workers N] [--placements N] [--gpu-placements N] [--prefill N] [--seed S]\n",
                   argv[0]);
      return 2;
    }
  }
#ifdef NDEBUG
  const char* build = "optimized, NDEBUG";
#else
  const char* build = "assertions on (not a Release build)";
#endif
  std::printf("scheduler_bench: %d workers (20%% with 8 fake GPUs, 1%% not ready), %d allocations prefilled\n",
              o.workers, o.prefill);
  std::printf("cpu: %s; one thread; build: %s; load average before: %s\n", cpuModel().c_str(), build,
              loadAverage().c_str());
  bool ok = true;

  {
    // At most half of what the cluster holds (128 per worker): the figure is about placing.
    ClusterState state = makeCluster(o);
    int n = std::min(o.placements, o.workers * 64);
    Figures f = run(state, o, n, "plain-", [](int i) {
      PlacementRequest r;
      r.jobKey = "default/plain-" + std::to_string(i / 100);
      r.group = "web";
      r.groupCount = 100;
      r.cpuMilli = 250;
      r.memoryBytes = kGi / 2;
      return r;
    });
    print("plain", f);
    ok = ok && f.failed == 0 && !overCommitted(state, o, {"plain-"}, {n});
  }
  {
    ClusterState state = makeCluster(o);
    // At most 3/4 of the A100s (one worker in 10 has 8): the figure is about placing, not failing.
    int n = std::min(o.gpuPlacements, o.workers / 10 * 8 * 3 / 4);
    Figures f = run(state, o, n, "gpu-", [](int i) {
      PlacementRequest r;
      r.jobKey = "default/train-" + std::to_string(i / 50);
      r.group = "trainer";
      r.groupCount = 50;
      r.cpuMilli = 1000;
      r.memoryBytes = 4 * kGi;
      r.gpus.count = 1;
      r.gpus.vendor = "nvidia";
      r.gpus.models = {"A100"};
      return r;
    });
    print("gpu", f);
    ok = ok && f.failed == 0;
  }
  {
    ClusterState state = makeCluster(o);
    int n = std::min(std::max(1, o.placements / 5), o.workers * 64);
    Figures f = run(state, o, n, "spread-", [](int i) {
      PlacementRequest r;
      r.jobKey = "default/spread-" + std::to_string(i / 100);
      r.group = "api";
      r.groupCount = 100;
      r.cpuMilli = 250;
      r.memoryBytes = kGi / 2;
      r.spreads = {{"zone", 50, {}}};
      r.affinities = {{{"disk", "In", {"ssd"}}, 50}};
      return r;
    });
    print("spread", f);
    ok = ok && f.failed == 0;
  }
  {
    // 16 per worker at most (less where prefill took room), until the first that finds no room.
    ClusterState state = makeCluster(o);
    int n = o.workers * 16 + 1;
    Figures f = run(state, o, n, "fill-", [](int i) {
      PlacementRequest r;
      r.jobKey = "default/fill-" + std::to_string(i / 100);
      r.group = "batch";
      r.groupCount = 100;
      r.cpuMilli = 2000;
      r.memoryBytes = 8 * kGi;
      return r;
    }, true);
    print("fill", f);
    // Every ready worker must be full to the last slot once placements start failing.
    ok = ok && f.failed > 0 && !overCommitted(state, o, {"fill-"}, {n});
    std::printf("%-11s %.2f%% of ready workers' cpu allocated when the first placement failed\n", "", [&] {
      int64_t used = 0, total = 0;
      for (int i = 0; i < o.workers; ++i) {
        const auto* w = state.worker("worker-" + std::to_string(i));
        if (w->ready) total += w->cpuMilli;
      }
      auto count = [&](const std::string& uid) {
        const auto* a = state.alloc(uid);
        if (a != nullptr && state.worker(a->worker)->ready) used += a->cpuMilli;
      };
      for (int i = 0; i < o.prefill; ++i) count("prefill-" + std::to_string(i));
      for (int i = 0; i < n; ++i) count("fill-" + std::to_string(i));
      return 100.0 * double(used) / double(total);
    }());
  }
  {
    ClusterState state = makeCluster(o);
    Figures f = run(state, o, 200, "none-", [](int) {
      PlacementRequest r;
      r.jobKey = "default/huge";
      r.group = "g";
      r.cpuMilli = 64000;  // more than any worker has
      r.memoryBytes = kGi;
      return r;
    });
    print("infeasible", f);
    ok = ok && f.placed == 0;
  }
  std::printf("load average after: %s\n", loadAverage().c_str());
  if (!ok) std::fprintf(stderr, "scheduler_bench: a correctness check failed\n");
  return ok ? 0 : 1;
}
