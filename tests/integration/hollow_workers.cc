// hollow_workers: thousands of simulated Workers in one process, for tests and benchmarks of the
// operator at scale (like kubemark's hollow nodes and KWOK). It plays the agent's part through the
// API only: registers Workers, renews their Leases, and moves Allocations through their phases.
// Nothing runs: the GPUs are fakes (named "Hollow NVIDIA H100" etc.) and tasks are scripts of
// phases chosen from the task spec.
//
//   hollow_workers --kubeconfig FILE [--count N] [--prefix P] [--classes FILE.yaml] [...]
//
// Worker classes come from flags (one class) or a YAML file:
//   classes:
//   - {name: gpu, count: 100, cpu: "32", memory: 256Gi, drivers: [exec],
//      labels: {rack: r1}, gpus: {count: 4, vendor: nvidia, model: H100, memoryBytes: 85899345920},
//      zones: {key: topology.kubernetes.io/zone, values: [a, b, c]}}
// Workers are named <prefix>-<class>-<n> (<prefix>-<n> for the flag class) and labelled
// hollow.foxden.io/class=<class>, plus foxden.io/gpu-vendor and foxden.io/gpu-model with GPUs.
//
// An Allocation on one of our workers with desiredState run goes Pending -> Running (conditions
// Ready and Healthy True) after --start-delay-ms. Its main tasks' specs choose what happens next:
//   command ["/bin/false"] (or env HOLLOW_EXIT_CODE=N, N != 0)   Failed, exit code 1 (N)
//   command ["/bin/true"]                                         exits 0 at once
//   command ["sleep", "N"] (or env HOLLOW_RUN_SECONDS=N)          exits 0 after N seconds
//   env HOLLOW_UNHEALTHY=true                                     Running but Ready/Healthy False
//   env HOLLOW_START_DELAY_MS=N                                   overrides --start-delay-ms
//   anything else                                                 runs until stopped
// A batch or sysbatch allocation whose tasks all exit 0 Succeeds; a service or system one Fails
// (its tasks are not meant to exit: the agent would have used up its restarts). desiredState stop
// (or deletion) ends it: Failed, "stopped on request", as the agent reports it.
//
// Going dark: --control FILE lists one worker name or name prefix ending in '*' per line; those
// workers stop renewing their Leases and stop answering (events for their allocations are
// ignored). Remove the line and they come back: Lease renewed, Ready set back to True, their
// allocations looked at again. The file is re-read every 200 ms.
//
// Threads: one timer thread (a heap of due actions: lease renewals spread over --renew-seconds,
// allocation phase changes), --threads pool threads that make the API calls, and two informer
// threads (all Allocations and all Workers, one watch each). No thread per worker.
//
// Output: "hollow: N workers ready" on stdout once registered (and --ready-file written); a stats
// line every --stats-seconds; --stats-file gets {"running":N,"pending":N,...} on each change of
// counts (rewritten at most every 100 ms) for scripts to poll.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <queue>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kube/http_client.h"
#include "kube/informer.h"
#include "kube/json.h"
#include "kube/kubeconfig.h"
#include "kube/node_lease.h"
#include "kube/quantity.h"
#include "kube/rest_client.h"
#include "kube/signals.h"
#include "kube/timeutil.h"
#include "kube/yaml.h"

namespace {

using kube::Json;
using kube::JsonPtr;
using kube::JsonValue;
using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const kube::ResourceRef kWorkers{"foxden.io", "v1alpha1", "workers", "", "", ""};
const kube::ResourceRef kAllocations{"foxden.io", "v1alpha1", "allocations", "", "", ""};
const kube::ResourceRef kLeases{"coordination.k8s.io", "v1", "leases", "foxden-system", "", ""};

std::atomic<bool> gStop{false};

void log(const std::string& m) { std::cerr << kube::nowTime() << " hollow: " << m << std::endl; }

struct GpuSpec {
  int count = 0;
  std::string vendor = "nvidia";
  std::string model = "H100";
  int64_t memoryBytes = 80LL << 30;
};

struct WorkerClass {
  std::string name;
  int count = 0;
  std::string cpu = "8";
  std::string memory = "32Gi";
  std::vector<std::string> drivers{"exec"};
  std::map<std::string, std::string> labels;
  GpuSpec gpus;
  std::string zoneKey = "topology.kubernetes.io/zone";
  std::vector<std::string> zones;
};

struct HollowWorker {
  std::string name;
  const WorkerClass* cls = nullptr;
  std::string zone;
  std::atomic<bool> dark{false};
};

// A fixed pool of threads running queued closures: API calls block, so they run here and never
// on the timer or informer threads.
class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
  }
  ~Pool() { stop(); }
  void post(std::function<void()> f) {
    {
      std::lock_guard l(mu_);
      q_.push_back(std::move(f));
    }
    cv_.notify_one();
  }
  size_t depth() {
    std::lock_guard l(mu_);
    return q_.size();
  }
  void stop() {
    {
      std::lock_guard l(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stopping_ || !q_.empty(); });
        if (q_.empty()) return;
        f = std::move(q_.front());
        q_.pop_front();
      }
      try {
        f();
      } catch (const std::exception& e) {
        log(std::string("task failed: ") + e.what());
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// A heap of due actions; due ones are posted to the pool.
class Timers {
 public:
  explicit Timers(Pool& pool) : pool_(pool), thread_([this] { run(); }) {}
  ~Timers() { stop(); }
  void at(SteadyClock::time_point when, std::function<void()> f) {
    {
      std::lock_guard l(mu_);
      heap_.push(Entry{when, seq_++, std::move(f)});
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard l(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  struct Entry {
    SteadyClock::time_point when;
    uint64_t seq;
    std::function<void()> f;
    bool operator>(const Entry& o) const { return when != o.when ? when > o.when : seq > o.seq; }
  };
  void run() {
    std::unique_lock l(mu_);
    while (!stopping_) {
      if (heap_.empty()) {
        cv_.wait(l);
        continue;
      }
      auto when = heap_.top().when;
      if (SteadyClock::now() < when) {
        cv_.wait_until(l, when);
        continue;
      }
      auto f = std::move(const_cast<Entry&>(heap_.top()).f);
      heap_.pop();
      l.unlock();
      pool_.post(std::move(f));
      l.lock();
    }
  }
  Pool& pool_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap_;
  uint64_t seq_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

// What an allocation's tasks do, read from its spec.
struct Plan {
  int startDelayMs = 0;
  bool unhealthy = false;
  bool exits = false;       // some task exits by itself
  int runSeconds = 0;       // when it exits (longest exiting task; failures win at their time)
  int exitCode = 0;
};

std::string envOf(const JsonValue& task, const std::string& name) {
  if (const JsonValue* env = kube::find(task, {"env"}); env && env->IsArray()) {
    for (const auto& e : env->GetArray()) {
      if (kube::getString(e, {"name"}) == name) return kube::getString(e, {"value"});
    }
  }
  return "";
}

Plan planFor(const JsonValue& alloc, int defaultDelayMs) {
  Plan p;
  p.startDelayMs = defaultDelayMs;
  const JsonValue* tasks = kube::find(alloc, {"spec", "tasks"});
  if (tasks == nullptr || !tasks->IsArray()) return p;
  bool allExit = true;
  int failAt = -1, doneAt = 0;
  for (const auto& t : tasks->GetArray()) {
    std::string hook = kube::getString(t, {"lifecycle", "hook"});
    if (!hook.empty() && hook != "main") continue;  // prestart/poststart/poststop: not what decides
    std::vector<std::string> argv;
    for (const char* f : {"command", "args"}) {
      if (const JsonValue* c = kube::find(t, {f}); c && c->IsArray()) {
        for (const auto& s : c->GetArray()) argv.emplace_back(kube::view(s));
      }
    }
    std::string prog = argv.empty() ? "" : argv[0].substr(argv[0].rfind('/') + 1);
    std::string code = envOf(t, "HOLLOW_EXIT_CODE");
    std::string run = envOf(t, "HOLLOW_RUN_SECONDS");
    if (envOf(t, "HOLLOW_UNHEALTHY") == "true") p.unhealthy = true;
    if (std::string d = envOf(t, "HOLLOW_START_DELAY_MS"); !d.empty()) p.startDelayMs = std::atoi(d.c_str());
    int secs = -1, exit = 0;
    if (prog == "false") {
      secs = 0;
      exit = 1;
    } else if (prog == "true") {
      secs = 0;
    } else if (prog == "sleep" && argv.size() > 1 && !argv[1].empty() &&
               std::all_of(argv[1].begin(), argv[1].end(), ::isdigit)) {
      secs = std::atoi(argv[1].c_str());
    }
    if (!run.empty()) secs = std::atoi(run.c_str());
    if (!code.empty()) {
      exit = std::atoi(code.c_str());
      if (secs < 0) secs = 0;
    }
    if (secs < 0) {
      allExit = false;
      continue;
    }
    if (exit != 0) {
      if (failAt < 0 || secs < failAt) {
        failAt = secs;
        p.exitCode = exit;
      }
    } else {
      doneAt = std::max(doneAt, secs);
    }
  }
  if (failAt >= 0) {
    p.exits = true;
    p.runSeconds = failAt;
  } else if (allExit) {
    p.exits = true;
    p.runSeconds = doneAt;
  }
  return p;
}

struct Options {
  std::string kubeconfig;
  std::string classesFile;
  std::string prefix = "hollow";
  WorkerClass flagClass;
  std::vector<std::string> flagLabels;
  std::string zones;
  int renewSeconds = 10;
  int leaseSeconds = 40;
  int startDelayMs = 200;
  int threads = 8;
  int statsSeconds = 10;
  bool reportPending = true;
  std::string controlFile;
  std::string readyFile;
  std::string statsFile;
};

class Hollow {
 public:
  Hollow(Options o, kube::RestClientPtr client, std::vector<WorkerClass> classes)
      : o_(std::move(o)), client_(std::move(client)), classes_(std::move(classes)), pool_(o_.threads), timers_(pool_) {
    for (const auto& c : classes_) {
      for (int i = 0; i < c.count; ++i) {
        auto w = std::make_unique<HollowWorker>();
        w->name = classes_.size() == 1 && c.name == "default" ? o_.prefix + "-" + std::to_string(i)
                                                              : o_.prefix + "-" + c.name + "-" + std::to_string(i);
        w->cls = &c;
        if (!c.zones.empty()) w->zone = c.zones[static_cast<size_t>(i) % c.zones.size()];
        byName_[w->name] = w.get();
        workers_.push_back(std::move(w));
      }
    }
  }

  int run() {
    applyControl();
    auto t0 = SteadyClock::now();
    registerAll();
    log("registered " + std::to_string(workers_.size()) + " workers in " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count()) + " ms");
    // Lease renewals, spread evenly over the period so the server sees a steady rate.
    auto now = SteadyClock::now();
    auto period = std::chrono::milliseconds(o_.renewSeconds * 1000);
    for (size_t i = 0; i < workers_.size(); ++i) {
      HollowWorker* w = workers_[i].get();
      timers_.at(now + period * static_cast<int64_t>(i) / static_cast<int64_t>(workers_.size()), [this, w] { renewLoop(w); });
    }
    kube::InformerOptions wo;
    wo.resource = kWorkers;
    workerInformer_ = std::make_unique<kube::Informer>(client_, wo);
    workerInformer_->addEventHandler({[this](const JsonPtr& o) { onWorker(o); },
                                      [this](const JsonPtr&, const JsonPtr& o) { onWorker(o); }, nullptr});
    workerInformer_->start();
    kube::InformerOptions ao;
    ao.resource = kAllocations;
    allocInformer_ = std::make_unique<kube::Informer>(client_, ao);
    allocInformer_->addEventHandler({[this](const JsonPtr& o) { onAlloc(o); },
                                     [this](const JsonPtr&, const JsonPtr& o) { onAlloc(o); },
                                     [this](const JsonPtr& o) { forget(o); }});
    allocInformer_->start();
    allocInformer_->waitForSync(60s);
    std::cout << "hollow: " << workers_.size() << " workers ready" << std::endl;
    if (!o_.readyFile.empty()) std::ofstream(o_.readyFile) << workers_.size() << "\n";
    auto nextStats = SteadyClock::now() + std::chrono::seconds(o_.statsSeconds);
    while (!gStop) {
      std::this_thread::sleep_for(50ms);  // the stats file is what benchmarks poll: keep it fresh
      applyControl();
      writeStats(false);
      if (SteadyClock::now() >= nextStats) {
        log(statsLine());
        nextStats = SteadyClock::now() + std::chrono::seconds(o_.statsSeconds);
      }
    }
    allocInformer_->stop();
    workerInformer_->stop();
    timers_.stop();
    pool_.stop();
    writeStats(true);
    log("stopped: " + statsLine());
    return 0;
  }

 private:
  struct AllocState {
    std::string uid;
    std::string ns, name, worker;
    std::string phase;  // what we reported last: "", Pending, Running, Succeeded, Failed
    uint64_t epoch = 0; // bumps invalidate pending timers
    std::string startedAt;
    // Status writes of one allocation go out one at a time and only the newest counts (the
    // kubelet's status manager): two patches in flight on the pool could land out of order.
    std::string unsent;  // newest status not yet sent ("" = none)
    bool sending = false;
  };

  // ---- workers and leases ----

  void registerAll() {
    std::atomic<size_t> left{workers_.size()};
    std::mutex mu;
    std::condition_variable cv;
    for (auto& w : workers_) {
      HollowWorker* hw = w.get();
      pool_.post([&, hw] {
        for (int attempt = 0; !gStop; ++attempt) {
          kube::Status st = registerWorker(*hw);
          if (st) break;
          if (attempt % 10 == 0) log("register " + hw->name + ": " + st.message());
          std::this_thread::sleep_for(200ms);
        }
        if (--left == 0) {
          std::lock_guard l(mu);
          cv.notify_all();
        }
      });
    }
    std::unique_lock l(mu);
    cv.wait(l, [&] { return left == 0; });
  }

  std::map<std::string, std::string> labelsOf(const HollowWorker& w) const {
    std::map<std::string, std::string> labels = w.cls->labels;
    labels["hollow.foxden.io/class"] = w.cls->name;
    if (!w.zone.empty()) labels[w.cls->zoneKey] = w.zone;
    if (w.cls->gpus.count > 0) {
      labels["foxden.io/gpu-vendor"] = w.cls->gpus.vendor;
      labels["foxden.io/gpu-model"] = w.cls->gpus.model;
    }
    return labels;
  }

  kube::Status registerWorker(const HollowWorker& w) {
    Json obj(rapidjson::kObjectType);
    auto& a = obj.GetAllocator();
    kube::setString(obj, "apiVersion", "foxden.io/v1alpha1", a);
    kube::setString(obj, "kind", "Worker", a);
    JsonValue& md = kube::ensureObject(obj, "metadata", a);
    kube::setString(md, "name", w.name, a);
    JsonValue& labels = kube::ensureObject(md, "labels", a);
    for (const auto& [k, v] : labelsOf(w)) kube::setString(labels, k, v, a);
    obj.AddMember("spec", JsonValue(rapidjson::kObjectType), a);
    auto created = client_->create(kWorkers, obj);
    if (!created && created.status().code() != 409) return created.status();
    if (!created) {  // adopt: our labels, keep the user's spec (cordon, drain)
      Json patch(rapidjson::kObjectType);
      JsonValue mdCopy(md, patch.GetAllocator());
      patch.AddMember("metadata", std::move(mdCopy), patch.GetAllocator());
      auto r = client_->patch(kWorkers.withName(w.name), kube::PatchType::kMerge, kube::toJson(patch));
      if (!r) return r.status();
    }
    if (kube::Status s = writeWorkerStatus(w); !s) return s;
    return renewLease(w);
  }

  kube::Status writeWorkerStatus(const HollowWorker& w) {
    const WorkerClass& c = *w.cls;
    Json st(rapidjson::kObjectType);
    auto& a = st.GetAllocator();
    JsonValue& status = kube::ensureObject(st, "status", a);
    std::string nvidia = c.gpus.vendor == "nvidia" ? std::to_string(c.gpus.count) : "0";
    std::string amd = c.gpus.vendor == "amd" ? std::to_string(c.gpus.count) : "0";
    for (const char* field : {"capacity", "allocatable", "free"}) {
      JsonValue& m = kube::ensureObject(status, field, a);
      kube::setString(m, "cpu", c.cpu, a);
      kube::setString(m, "memory", c.memory, a);
      kube::setString(m, "nvidia.com/gpu", nvidia, a);
      kube::setString(m, "amd.com/gpu", amd, a);
    }
    JsonValue gpus(rapidjson::kArrayType);
    for (int i = 0; i < c.gpus.count; ++i) {
      JsonValue g(rapidjson::kObjectType);
      kube::setString(g, "vendor", c.gpus.vendor, a);
      g.AddMember("index", i, a);
      kube::setString(g, "uuid", "GPU-hollow-" + w.name + "-" + std::to_string(i), a);
      kube::setString(g, "model", "Hollow " + std::string(c.gpus.vendor == "amd" ? "AMD " : "NVIDIA ") + c.gpus.model, a);
      g.AddMember("memoryBytes", c.gpus.memoryBytes, a);
      gpus.PushBack(std::move(g), a);
    }
    status.AddMember("gpus", std::move(gpus), a);
    JsonValue drivers(rapidjson::kArrayType);
    for (const auto& d : c.drivers) drivers.PushBack(kube::str(d, a), a);
    status.AddMember("drivers", std::move(drivers), a);
    JsonValue addrs(rapidjson::kArrayType);
    JsonValue h(rapidjson::kObjectType);
    kube::setString(h, "type", "Hostname", a);
    kube::setString(h, "address", w.name, a);
    addrs.PushBack(std::move(h), a);
    status.AddMember("addresses", std::move(addrs), a);
    kube::setString(status, "agentVersion", "hollow", a);
    status.AddMember("conditions", readyConditions(a), a);
    auto r = client_->patchStatus(kWorkers.withName(w.name), kube::PatchType::kMerge, kube::toJson(st));
    return r ? kube::Status::ok() : r.status();
  }

  static JsonValue readyConditions(kube::JsonAlloc& a) {
    JsonValue conds(rapidjson::kArrayType);
    std::string now = kube::nowTime();
    JsonValue c(rapidjson::kObjectType);
    kube::setString(c, "type", "Ready", a);
    kube::setString(c, "status", "True", a);
    kube::setString(c, "reason", "AgentReady", a);
    kube::setString(c, "message", "hollow worker is posting ready status", a);
    kube::setString(c, "lastHeartbeatTime", now, a);
    kube::setString(c, "lastTransitionTime", now, a);
    conds.PushBack(std::move(c), a);
    return conds;
  }

  kube::Status renewLease(const HollowWorker& w) {
    renewals_++;
    return kube::renewNodeLease(*client_, kLeases.ns, w.name, o_.leaseSeconds);
  }

  void renewLoop(HollowWorker* w) {
    if (gStop) return;
    if (!w->dark) {
      kube::Status st = renewLease(*w);
      if (!st) {
        errors_++;
        log("lease " + w->name + ": " + st.message());
      }
    }
    timers_.at(SteadyClock::now() + std::chrono::seconds(o_.renewSeconds), [this, w] { renewLoop(w); });
  }

  // The worker controller marks a worker's Ready Unknown when its Lease lapses; like the agent's
  // next status update, we set it back once we answer again.
  void onWorker(const JsonPtr& obj) {
    auto it = byName_.find(kube::name(*obj));
    if (it == byName_.end() || it->second->dark) return;
    if (readyStatus(*obj) == "True") return;
    HollowWorker* w = it->second;
    pool_.post([this, w] { fixReady(w); });
  }

  static std::string readyStatus(const JsonValue& worker) {
    if (const JsonValue* conds = kube::find(worker, {"status", "conditions"}); conds && conds->IsArray()) {
      for (const auto& c : conds->GetArray()) {
        if (kube::getString(c, {"type"}) == "Ready") return kube::getString(c, {"status"});
      }
    }
    return "";
  }

  void fixReady(HollowWorker* w) {
    if (w->dark || !workerInformer_) return;
    JsonPtr cur = workerInformer_->get(w->name);
    if (cur && readyStatus(*cur) == "True") return;
    kube::Status st = renewLease(*w);  // the lease first: the controller reads it before Ready
    if (st) st = writeWorkerStatus(*w);
    if (!st) {
      errors_++;
      log("ready " + w->name + ": " + st.message());
    }
  }

  // ---- the control file ----

  void applyControl() {
    if (o_.controlFile.empty()) return;
    struct stat sb{};
    int64_t mtime = ::stat(o_.controlFile.c_str(), &sb) == 0 ? sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec : -1;
    if (mtime == controlMtime_) return;
    controlMtime_ = mtime;
    std::vector<std::string> names, prefixes;
    std::ifstream in(o_.controlFile);
    std::string line;
    while (std::getline(in, line)) {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
      if (line.empty() || line[0] == '#') continue;
      if (line.back() == '*') prefixes.push_back(line.substr(0, line.size() - 1));
      else names.push_back(line);
    }
    int dark = 0;
    for (auto& w : workers_) {
      bool d = std::find(names.begin(), names.end(), w->name) != names.end() ||
               std::any_of(prefixes.begin(), prefixes.end(), [&](const std::string& p) { return w->name.rfind(p, 0) == 0; });
      dark += d;
      bool was = w->dark.exchange(d);
      if (was && !d) comeBack(w.get());
    }
    darkCount_ = dark;
    log("control: " + std::to_string(dark) + " workers dark");
  }

  void comeBack(HollowWorker* w) {
    pool_.post([this, w] {
      kube::Status st = renewLease(*w);
      if (!st) log("lease " + w->name + ": " + st.message());
      fixReady(w);
    });
    if (!allocInformer_) return;
    for (const auto& obj : allocInformer_->list()) {
      if (kube::getString(*obj, {"spec", "workerName"}) == w->name) onAlloc(obj, true);
    }
  }

  // ---- allocations ----

  void forget(const JsonPtr& obj) {
    std::lock_guard l(mu_);
    allocs_.erase(kube::uid(*obj));
  }

  void onAlloc(const JsonPtr& obj, bool revisit = false) {
    std::string workerName = kube::getString(*obj, {"spec", "workerName"});
    auto wit = byName_.find(workerName);
    if (wit == byName_.end() || wit->second->dark) return;
    std::string uid = kube::uid(*obj);
    std::string phase = kube::getString(*obj, {"status", "phase"});
    bool terminal = phase == "Succeeded" || phase == "Failed" || phase == "Lost";
    bool stop = kube::getString(*obj, {"spec", "desiredState"}, "run") == "stop" ||
                kube::find(*obj, {"metadata", "deletionTimestamp"}) != nullptr;
    std::lock_guard l(mu_);
    auto [it, fresh] = allocs_.try_emplace(uid);
    AllocState& s = it->second;
    if (fresh) {
      s.uid = uid;
      s.ns = kube::ns(*obj);
      s.name = kube::name(*obj);
      s.worker = workerName;
      s.phase = phase;  // adopt what is there (e.g. after a restart of this process)
    }
    if (terminal) {
      if (s.phase != phase) ++s.epoch;  // someone else (the operator: Lost) ended it
      s.phase = phase;
      return;
    }
    if (stop) {
      if (s.phase == "Succeeded" || s.phase == "Failed") return;  // our report is on its way
      ++s.epoch;
      s.phase = "Failed";
      finish(s, *obj, "Failed", 137, "Killed", "stopped on request");
      return;
    }
    // Pending and Running allocations are owned by their timers, unless their worker just came
    // back from the dark (timers that fell due meanwhile were dropped).
    if (!revisit && !fresh && (s.phase == "Pending" || s.phase == "Running")) return;
    if (s.phase == "Succeeded" || s.phase == "Failed") return;
    Plan p = planFor(*obj, o_.startDelayMs);
    uint64_t epoch = ++s.epoch;
    Json copy = kube::cloneJson(*obj);
    auto shared = std::make_shared<Json>(std::move(copy));
    if (s.phase == "Running") {  // adopted: only its end is still to come
      scheduleExit(s, shared, p, epoch);
      return;
    }
    s.phase = "Pending";
    statsDirty_ = true;  // seen: counted even when nothing is reported yet
    if (o_.reportPending && p.startDelayMs > 0) report(s, *shared, "Pending", false, nullptr);
    timers_.at(SteadyClock::now() + std::chrono::milliseconds(p.startDelayMs), [this, uid, shared, p, epoch] {
      std::lock_guard l(mu_);
      auto it = allocs_.find(uid);
      if (it == allocs_.end() || it->second.epoch != epoch || byName_.at(it->second.worker)->dark) return;
      AllocState& st = it->second;
      st.phase = "Running";
      st.startedAt = kube::nowTime();
      report(st, *shared, "Running", !p.unhealthy, nullptr);
      scheduleExit(st, shared, p, epoch);
    });
  }

  // Called with mu_ held.
  void scheduleExit(AllocState& s, const std::shared_ptr<Json>& alloc, const Plan& p, uint64_t epoch) {
    if (!p.exits) return;
    std::string uid = s.uid;
    timers_.at(SteadyClock::now() + std::chrono::seconds(p.runSeconds), [this, uid, alloc, p, epoch] {
      std::lock_guard l(mu_);
      auto it = allocs_.find(uid);
      if (it == allocs_.end() || it->second.epoch != epoch || byName_.at(it->second.worker)->dark) return;
      AllocState& st = it->second;
      std::string type = kube::getString(*alloc, {"spec", "jobType"}, "service");
      bool batch = type == "batch" || type == "sysbatch";
      if (p.exitCode == 0 && batch) {
        st.phase = "Succeeded";
        finish(st, *alloc, "Succeeded", 0, "Completed", "");
      } else {
        st.phase = "Failed";
        finish(st, *alloc, "Failed", p.exitCode, p.exitCode == 0 ? "Completed" : "Error",
               p.exitCode == 0 ? "a service task exited" : "task exited with code " + std::to_string(p.exitCode));
      }
    });
  }

  // Called with mu_ held: queues the status patch.
  void finish(AllocState& s, const JsonValue& alloc, const std::string& phase, int exitCode, const std::string& reason,
              const std::string& message) {
    TaskEnd end{exitCode, reason, message};
    report(s, alloc, phase, false, &end);
  }

  struct TaskEnd {
    int code = 0;
    std::string reason, message;
  };

  // Called with mu_ held: builds the status patch now (the state is consistent), sends it on the pool.
  void report(AllocState& s, const JsonValue& alloc, const std::string& phase, bool ready, const TaskEnd* end) {
    Json st(rapidjson::kObjectType);
    auto& a = st.GetAllocator();
    JsonValue& status = kube::ensureObject(st, "status", a);
    std::string now = kube::nowTime();
    kube::setString(status, "phase", phase, a);
    if (end != nullptr && !end->message.empty()) kube::setString(status, "message", end->message, a);
    if (!s.startedAt.empty()) kube::setString(status, "startedAt", s.startedAt, a);
    if (end != nullptr) kube::setString(status, "finishedAt", now, a);
    if (auto g = kube::getInt(alloc, {"metadata", "generation"})) status.AddMember("observedGeneration", *g, a);
    JsonValue tasks(rapidjson::kArrayType);
    if (const JsonValue* spec = kube::find(alloc, {"spec", "tasks"}); spec && spec->IsArray()) {
      for (const auto& t : spec->GetArray()) {
        JsonValue e(rapidjson::kObjectType);
        kube::setString(e, "name", kube::getString(t, {"name"}), a);
        std::string state = end != nullptr ? "Terminated" : phase == "Running" ? "Running" : "Waiting";
        kube::setString(e, "state", state, a);
        e.AddMember("restarts", 0, a);
        if (end != nullptr) {
          e.AddMember("exitCode", end->code, a);
          kube::setString(e, "reason", end->reason, a);
          kube::setString(e, "finishedAt", now, a);
        }
        if (!s.startedAt.empty()) kube::setString(e, "startedAt", s.startedAt, a);
        e.AddMember("ready", ready && phase == "Running", a);
        tasks.PushBack(std::move(e), a);
      }
    }
    status.AddMember("tasks", std::move(tasks), a);
    JsonValue conds(rapidjson::kArrayType);
    bool ok = ready && phase == "Running";
    for (const char* type : {"Ready", "Healthy"}) {
      JsonValue c(rapidjson::kObjectType);
      kube::setString(c, "type", type, a);
      kube::setString(c, "status", ok ? "True" : "False", a);
      kube::setString(c, "reason", ok ? (std::string(type) == "Ready" ? "TasksReady" : "TasksHealthy")
                                      : (phase == "Running" ? "Unhealthy" : phase == "Pending" ? "Starting" : phase),
                      a);
      kube::setString(c, "message", "", a);
      kube::setString(c, "lastTransitionTime", now, a);
      conds.PushBack(std::move(c), a);
    }
    status.AddMember("conditions", std::move(conds), a);
    statsDirty_ = true;
    s.unsent = kube::toJson(st);
    if (s.sending) return;  // the sender in flight picks it up
    s.sending = true;
    std::string uid = s.uid;
    kube::ResourceRef ref = kAllocations.withNamespace(s.ns).withName(s.name);
    pool_.post([this, uid, ref] { sendStatus(uid, ref); });
  }

  // On the pool: sends the allocation's newest status until none is left unsent.
  void sendStatus(const std::string& uid, const kube::ResourceRef& ref) {
    int failures = 0;
    for (;;) {
      std::string body;
      {
        std::lock_guard l(mu_);
        auto it = allocs_.find(uid);
        if (it == allocs_.end()) return;
        if (it->second.unsent.empty()) {
          it->second.sending = false;
          return;
        }
        body.swap(it->second.unsent);
      }
      auto r = client_->patchStatus(ref, kube::PatchType::kMerge, body);
      patches_++;
      if (!r && r.status().code() != 404) {
        errors_++;
        log("status " + ref.ns + "/" + ref.name + ": " + r.status().message());
        // A lost report would leave the allocation's phase behind for good (as the agent, send it
        // again; a merge patch of the same status is idempotent), unless a newer one is waiting.
        if (++failures <= 5) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200 * failures));
          std::lock_guard l(mu_);
          auto it = allocs_.find(uid);
          if (it != allocs_.end() && it->second.unsent.empty()) it->second.unsent = std::move(body);
        }
      }
    }
  }

  // ---- stats ----

  std::map<std::string, int> currentPhases() {
    std::map<std::string, int> m{{"Pending", 0}, {"Running", 0}, {"Succeeded", 0}, {"Failed", 0}, {"Lost", 0}};
    std::lock_guard l(mu_);
    for (const auto& [uid, s] : allocs_) {
      if (!s.phase.empty()) m[s.phase]++;
    }
    return m;
  }

  std::string statsLine() {
    std::ostringstream os;
    os << "workers=" << workers_.size() << " dark=" << darkCount_.load();
    for (const auto& [k, v] : currentPhases()) os << " " << k << "=" << v;
    os << " renewals=" << renewals_.load() << " patches=" << patches_.load() << " errors=" << errors_.load()
       << " queue=" << pool_.depth();
    return os.str();
  }

  void writeStats(bool force) {
    if (o_.statsFile.empty()) return;
    {
      std::lock_guard l(mu_);
      if (!statsDirty_ && !force && statsWritten_) return;
      statsDirty_ = false;
      statsWritten_ = true;
    }
    std::ostringstream os;
    os << "{\"workers\":" << workers_.size() << ",\"dark\":" << darkCount_.load();
    for (const auto& [k, v] : currentPhases()) os << ",\"" << k << "\":" << v;
    os << ",\"patches\":" << patches_.load() << ",\"errors\":" << errors_.load() << "}\n";
    std::string tmp = o_.statsFile + ".tmp";
    std::ofstream(tmp) << os.str();
    std::rename(tmp.c_str(), o_.statsFile.c_str());
  }

  const Options o_;
  const kube::RestClientPtr client_;
  const std::vector<WorkerClass> classes_;
  std::vector<std::unique_ptr<HollowWorker>> workers_;
  std::unordered_map<std::string, HollowWorker*> byName_;  // constant after construction
  Pool pool_;
  Timers timers_;
  std::unique_ptr<kube::Informer> workerInformer_;
  std::unique_ptr<kube::Informer> allocInformer_;
  int64_t controlMtime_ = -2;  // main thread only

  std::mutex mu_;  // guards the fields below
  std::unordered_map<std::string, AllocState> allocs_;  // by uid
  bool statsDirty_ = true;
  bool statsWritten_ = false;

  std::atomic<int> darkCount_{0};
  std::atomic<uint64_t> renewals_{0};
  std::atomic<uint64_t> patches_{0};
  std::atomic<uint64_t> errors_{0};
};

kube::StatusOr<std::vector<WorkerClass>> loadClasses(const std::string& path) {
  std::ifstream in(path);
  if (!in) return kube::Status::badRequest("cannot read " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto doc = kube::yamlToJson(text);
  if (!doc) return doc.status();
  const JsonValue* list = kube::find(*doc, {"classes"});
  if (list == nullptr || !list->IsArray()) return kube::Status::badRequest(path + ": want classes: [...]");
  std::vector<WorkerClass> out;
  for (const auto& c : list->GetArray()) {
    WorkerClass w;
    w.name = kube::getString(c, {"name"}, "c" + std::to_string(out.size()));
    w.count = static_cast<int>(kube::getInt(c, {"count"}).value_or(1));
    auto q = [&](const char* f, std::string& dst) {
      if (const JsonValue* v = kube::find(c, {f})) dst = v->IsString() ? std::string(kube::view(*v)) : kube::toJson(*v);
    };
    q("cpu", w.cpu);
    q("memory", w.memory);
    if (const JsonValue* d = kube::find(c, {"drivers"}); d && d->IsArray()) {
      w.drivers.clear();
      for (const auto& s : d->GetArray()) w.drivers.emplace_back(kube::view(s));
    }
    if (const JsonValue* l = kube::find(c, {"labels"}); l && l->IsObject()) {
      for (const auto& m : l->GetObject()) w.labels[m.name.GetString()] = m.value.IsString() ? kube::view(m.value) : kube::toJson(m.value);
    }
    if (kube::find(c, {"gpus"}) != nullptr) {
      w.gpus.count = static_cast<int>(kube::getInt(c, {"gpus", "count"}).value_or(0));
      w.gpus.vendor = kube::getString(c, {"gpus", "vendor"}, "nvidia");
      w.gpus.model = kube::getString(c, {"gpus", "model"}, "H100");
      w.gpus.memoryBytes = kube::getInt(c, {"gpus", "memoryBytes"}).value_or(80LL << 30);
    }
    if (const JsonValue* z = kube::find(c, {"zones", "values"}); z && z->IsArray()) {
      for (const auto& s : z->GetArray()) w.zones.emplace_back(kube::view(s));
      w.zoneKey = kube::getString(c, {"zones", "key"}, w.zoneKey);
    }
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  WorkerClass& fc = o.flagClass;
  fc.name = "default";
  fc.count = 10;
  bool rawExec = false;
  CLI::App app{"hollow_workers: simulated Workers for operator tests and benchmarks"};
  app.add_option("--kubeconfig", o.kubeconfig, "kubeconfig with an admin token")->required();
  app.add_option("--count", fc.count, "workers (flag class)");
  app.add_option("--prefix", o.prefix, "worker name prefix");
  app.add_option("--classes", o.classesFile, "YAML file of worker classes (instead of the flag class)");
  app.add_option("--cpu", fc.cpu, "allocatable cpu per worker");
  app.add_option("--memory", fc.memory, "allocatable memory per worker");
  app.add_option("--gpus", fc.gpus.count, "fake GPUs per worker");
  app.add_option("--gpu-vendor", fc.gpus.vendor, "nvidia | amd");
  app.add_option("--gpu-model", fc.gpus.model, "GPU model label");
  app.add_option("--gpu-memory-bytes", fc.gpus.memoryBytes, "memory of one GPU");
  app.add_option("--label", o.flagLabels, "k=v, repeatable");
  app.add_option("--zones", o.zones, "comma-separated values of --zone-key, assigned round robin");
  app.add_option("--zone-key", fc.zoneKey, "label key for --zones");
  app.add_flag("--raw-exec", rawExec, "advertise the raw_exec driver too");
  app.add_option("--renew-seconds", o.renewSeconds, "Lease renewal period");
  app.add_option("--lease-seconds", o.leaseSeconds, "leaseDurationSeconds written");
  app.add_option("--start-delay-ms", o.startDelayMs, "Pending -> Running delay");
  app.add_option("--threads", o.threads, "API call threads");
  app.add_option("--stats-seconds", o.statsSeconds, "stats log period");
  app.add_option("--control", o.controlFile, "file of dark workers (names, or prefixes ending in *)");
  app.add_option("--ready-file", o.readyFile, "written once every worker is registered");
  app.add_option("--stats-file", o.statsFile, "JSON counts, rewritten on change");
  app.add_flag("!--no-pending", o.reportPending, "skip the Pending report");
  CLI11_PARSE(app, argc, argv);
  for (const auto& l : o.flagLabels) {
    auto eq = l.find('=');
    if (eq == std::string::npos) {
      std::cerr << "hollow: --label wants k=v\n";
      return 2;
    }
    fc.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  std::stringstream zs(o.zones);
  for (std::string z; std::getline(zs, z, ',');) {
    if (!z.empty()) fc.zones.push_back(z);
  }
  if (rawExec) fc.drivers.emplace_back("raw_exec");
  std::vector<WorkerClass> classes{fc};
  if (!o.classesFile.empty()) {
    auto c = loadClasses(o.classesFile);
    if (!c) {
      std::cerr << "hollow: " << c.status().message() << "\n";
      return 2;
    }
    classes = std::move(*c);
  }
  auto cfg = kube::loadKubeconfig(o.kubeconfig);
  if (!cfg) {
    std::cerr << "hollow: " << cfg.status().message() << "\n";
    return 2;
  }
  kube::trustOnlyConfigCa(*cfg);  // while this is the only thread
  kube::initHttpClientThreads(2);  // I/O completions only: the API calls block their own threads
  // A short timeout: a request stuck on a connection to a restarted server must not hold a pool
  // thread (and with it other workers' lease renewals) for cpprest's default 30 s.
  kube::HttpClientOptions ho;
  ho.requestTimeout = std::chrono::seconds(3);
  ho.userAgent = "hollow-workers";
  auto http = kube::newHttpClient(*cfg, ho);
  if (!http) {
    std::cerr << "hollow: " << http.status().message() << "\n";
    return 2;
  }
  kube::stopOnTerminationSignals(&gStop);
  Hollow h(o, std::make_shared<kube::RestClient>(*http), std::move(classes));
  return h.run();
}
