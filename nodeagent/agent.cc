#include "nodeagent/agent.h"

#include <ifaddrs.h>
#include <signal.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "kube/certs.h"
#include "kube/node_lease.h"
#include "kube/quantity.h"
#include "kube/timeutil.h"
#include "kube/thread_name.h"

namespace nodeagent {

using kube::Json;
using kube::JsonValue;
using kube::Status;

namespace {

const kube::ResourceRef kWorkers{"foxden.io", "v1alpha1", "workers", "", "", ""};
// Allocation-directory skeletons kept ready (nodeagent/allocrunner/dir_pool.h): one-at-a-time
// starts take one each; a burst uses them up and makes the rest at the start.
constexpr size_t kDirPoolSize = 4;
const kube::ResourceRef kAllocations{"foxden.io", "v1alpha1", "allocations", "", "", ""};
const kube::ResourceRef kLeases{"coordination.k8s.io", "v1", "leases", "foxden-system", "", ""};

int64_t meminfo(const std::string& field) {
  std::ifstream f("/proc/meminfo");
  std::string k;
  int64_t v = 0;
  std::string unit;
  while (f >> k >> v >> unit) {
    if (k == field + ":") return v * 1024;
  }
  return 0;
}

std::string hostIp() {
  ifaddrs* ifs = nullptr;
  std::string out;
  if (getifaddrs(&ifs) != 0) return out;
  for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    if (std::string(buf).rfind("127.", 0) == 0) continue;
    out = buf;
    break;
  }
  freeifaddrs(ifs);
  return out;
}

void log(const std::string& msg) { std::cerr << kube::nowTime() << " foxden-agent: " << msg << std::endl; }

}  // namespace

Agent::Agent(AgentOptions options, kube::RestClientPtr client, DriverPtr exec, DriverPtr rawExec)
    : options_(std::move(options)),
      client_(std::move(client)),
      exec_(std::move(exec)),
      rawExec_(std::move(rawExec)),
      status_(client_) {
  ctx_.dataDir = options_.dataDir;
  ctx_.execDriver = exec_.get();
  ctx_.rawExecDriver = options_.enableRawExec ? rawExec_.get() : nullptr;
  ctx_.status = &status_;
  enableStartTrace(options_.traceStarts);
  RootfsOptions ro;
  ro.cacheDir = options_.dataDir + "/rootfs";
  ro.allowedDirs = options_.rootfsDirs;
  if (ro.allowedDirs.empty()) {
    ro.allowedDirs.push_back(options_.dataDir + "/images");
    std::error_code ec;
    std::filesystem::create_directories(ro.allowedDirs.back(), ec);
  }
  rootfs_ = std::make_unique<RootfsCache>(std::move(ro));
  dirPool_ = std::make_unique<DirPool>(options_.dataDir, kDirPoolSize);
  ctx_.dirPool = dirPool_.get();
  ctx_.root.rootBinds = options_.rootBinds;
  ctx_.root.rootfs = rootfs_.get();
  ctx_.root.hostVolumes = options_.hostVolumes;
  if (options_.traceStarts) {
    // watch_to_exec: from the watch event to the driver seeing the execve succeed (the benchmark's
    // figure); watch_to_running: to the task runner having persisted its state (fsync) and set
    // Running, which is when this is called.
    ctx_.onTaskStarted = [this](const std::string& key, std::chrono::steady_clock::time_point execAt) {
      auto now = std::chrono::steady_clock::now();
      if (execAt == std::chrono::steady_clock::time_point{}) execAt = now;
      std::lock_guard l(mu_);
      auto it = firstSeen_.find(key);
      if (it == firstSeen_.end()) return;
      auto us = [&](std::chrono::steady_clock::time_point t) {
        return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(t - it->second).count());
      };
      // One write per line: the driver traces from other threads at the same time.
      std::string line = "trace: alloc=" + key + " watch_to_exec_us=" + us(execAt) + " watch_to_running_us=" + us(now) + " seen_at_us=" +
                         std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                            it->second.time_since_epoch()).count()) + "\n";
      std::cerr << line << std::flush;
    };
  }
}

Agent::~Agent() {
  if (logServer_) logServer_->stop();
  queue_.shutDown();
  if (informer_) informer_->stop();
  // Runners are destroyed without stopping their tasks' processes: a restarted agent adopts them.
  std::lock_guard l(mu_);
  runners_.clear();
  status_.stop();
}

Status Agent::registerWorker() {
  auto existing = client_->get(kWorkers.withName(options_.name));
  if (!existing && existing.status().code() != 404) return existing.status();
  if (!existing) {
    Json w(rapidjson::kObjectType);
    auto& a = w.GetAllocator();
    kube::setString(w, "apiVersion", "foxden.io/v1alpha1", a);
    kube::setString(w, "kind", "Worker", a);
    JsonValue& md = kube::ensureObject(w, "metadata", a);
    kube::setString(md, "name", options_.name, a);
    JsonValue& labels = kube::ensureObject(md, "labels", a);
    for (const auto& [k, v] : workerLabels()) kube::setString(labels, k, v, a);
    w.AddMember("spec", JsonValue(rapidjson::kObjectType), a);
    auto created = client_->create(kWorkers, w);
    if (!created && created.status().code() != 409) return created.status();
    log("registered Worker " + options_.name);
  } else if (!workerLabels().empty()) {
    Json patch(rapidjson::kObjectType);
    auto& a = patch.GetAllocator();
    JsonValue& labels = kube::ensureObject(kube::ensureObject(patch, "metadata", a), "labels", a);
    for (const auto& [k, v] : workerLabels()) kube::setString(labels, k, v, a);
    auto r = client_->patch(kWorkers.withName(options_.name), kube::PatchType::kMerge, kube::toJson(patch));
    if (!r) return r.status();
    log("adopted Worker " + options_.name);
  }
  return updateWorkerStatus();
}

Status Agent::updateWorkerStatus() {
  Json st(rapidjson::kObjectType);
  auto& a = st.GetAllocator();
  JsonValue& status = kube::ensureObject(st, "status", a);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int64_t mem = meminfo("MemTotal");
  int nvidia = 0, amd = 0;
  JsonValue gpus(rapidjson::kArrayType);
  for (const auto& g : gpus_.gpus) {
    (g.vendor == "amd" ? amd : nvidia)++;
    JsonValue e(rapidjson::kObjectType);
    kube::setString(e, "vendor", g.vendor, a);
    e.AddMember("index", g.index, a);
    if (!g.uuid.empty()) kube::setString(e, "uuid", g.uuid, a);
    if (!g.model.empty()) kube::setString(e, "model", g.model, a);
    e.AddMember("memoryBytes", g.memoryBytes, a);
    gpus.PushBack(std::move(e), a);
  }
  for (const char* field : {"capacity", "allocatable"}) {
    JsonValue& m = kube::ensureObject(status, field, a);
    kube::setString(m, "cpu", std::to_string(cpus), a);
    kube::setString(m, "memory", std::to_string(mem / 1024) + "Ki", a);
    kube::setString(m, "nvidia.com/gpu", std::to_string(nvidia), a);
    kube::setString(m, "amd.com/gpu", std::to_string(amd), a);
  }
  // allocated: what the unfinished allocations here asked for (the scheduler's assignment when
  // present, else the sum of their tasks' requests); free = allocatable - allocated.
  int64_t cpuMilli = 0, memBytes = 0;
  int nvidiaUsed = 0, amdUsed = 0;
  if (informer_) {
    for (const auto& obj : informer_->list()) {
      std::string phase = kube::getString(*obj, {"status", "phase"});
      if (phase == "Succeeded" || phase == "Failed" || phase == "Lost") continue;
      auto q = [](const JsonValue* v) -> int64_t {
        if (v == nullptr || !v->IsString()) return 0;
        auto p = kube::Quantity::parse(kube::view(*v));
        return p ? p->milliValue() : 0;
      };
      int64_t c = q(kube::find(*obj, {"spec", "resources", "cpu"}));
      int64_t m = q(kube::find(*obj, {"spec", "resources", "memory"})) / 1000;
      if (c == 0 && m == 0) {
        if (const JsonValue* tasks = kube::find(*obj, {"spec", "tasks"}); tasks && tasks->IsArray()) {
          for (const auto& t : tasks->GetArray()) {
            c += q(kube::find(t, {"resources", "requests", "cpu"}));
            m += q(kube::find(t, {"resources", "requests", "memory"})) / 1000;
          }
        }
      }
      cpuMilli += c;
      memBytes += m;
      if (const JsonValue* g = kube::find(*obj, {"spec", "resources", "gpus"}); g && g->IsArray()) {
        for (const auto& e : g->GetArray()) (kube::getString(e, {"vendor"}, "nvidia") == "amd" ? amdUsed : nvidiaUsed)++;
      }
    }
  }
  JsonValue& allocated = kube::ensureObject(status, "allocated", a);
  kube::setString(allocated, "cpu", std::to_string(cpuMilli) + "m", a);
  kube::setString(allocated, "memory", std::to_string(memBytes / 1024) + "Ki", a);
  JsonValue& free = kube::ensureObject(status, "free", a);
  kube::setString(free, "cpu", std::to_string(std::max<int64_t>(0, cpus * 1000 - cpuMilli)) + "m", a);
  kube::setString(free, "memory", std::to_string(std::max<int64_t>(0, mem - memBytes) / 1024) + "Ki", a);
  kube::setString(allocated, "nvidia.com/gpu", std::to_string(nvidiaUsed), a);
  kube::setString(allocated, "amd.com/gpu", std::to_string(amdUsed), a);
  kube::setString(free, "nvidia.com/gpu", std::to_string(std::max(0, nvidia - nvidiaUsed)), a);
  kube::setString(free, "amd.com/gpu", std::to_string(std::max(0, amd - amdUsed)), a);
  status.AddMember("gpus", std::move(gpus), a);
  JsonValue drivers(rapidjson::kArrayType);
  drivers.PushBack("exec", a);
  if (options_.enableRawExec) drivers.PushBack("raw_exec", a);
  status.AddMember("drivers", std::move(drivers), a);
  JsonValue addrs(rapidjson::kArrayType);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  JsonValue h(rapidjson::kObjectType);
  kube::setString(h, "type", "Hostname", a);
  kube::setString(h, "address", host, a);
  addrs.PushBack(std::move(h), a);
  std::string ip = hostIp();
  if (!ip.empty()) {
    JsonValue i(rapidjson::kObjectType);
    kube::setString(i, "type", "InternalIP", a);
    kube::setString(i, "address", ip, a);
    addrs.PushBack(std::move(i), a);
  }
  status.AddMember("addresses", std::move(addrs), a);
  if (logServer_) {
    JsonValue ep(rapidjson::kObjectType);
    ep.AddMember("port", static_cast<int>(logServer_->port()), a);
    if (options_.listenHost != "0.0.0.0" && options_.listenHost != "::") {
      kube::setString(ep, "address", options_.listenHost, a);
    }
    kube::setString(ep, "certificateSHA256", certSha256_, a);
    status.AddMember("agentEndpoint", std::move(ep), a);
  }
  kube::setString(status, "agentVersion", options_.version, a);
  {
    std::lock_guard l(mu_);
    status.AddMember("allocations", static_cast<int64_t>(runners_.size()), a);
  }
  struct statvfs vfs{};
  bool diskLow = statvfs(options_.dataDir.c_str(), &vfs) == 0 && vfs.f_blocks > 0 &&
                 static_cast<double>(vfs.f_bavail) / static_cast<double>(vfs.f_blocks) < 0.05;
  bool memLow = mem > 0 && static_cast<double>(meminfo("MemAvailable")) / static_cast<double>(mem) < 0.05;
  JsonValue conds(rapidjson::kArrayType);
  std::string now = kube::nowTime();
  auto cond = [&](const char* type, bool value, const char* reason, const char* message) {
    JsonValue c(rapidjson::kObjectType);
    kube::setString(c, "type", type, a);
    kube::setString(c, "status", value ? "True" : "False", a);
    kube::setString(c, "reason", reason, a);
    kube::setString(c, "message", message, a);
    kube::setString(c, "lastHeartbeatTime", now, a);
    kube::setString(c, "lastTransitionTime", now, a);
    conds.PushBack(std::move(c), a);
  };
  cond("Ready", true, "AgentReady", "foxden-agent is posting ready status");
  cond("MemoryPressure", memLow, memLow ? "LowMemory" : "SufficientMemory", memLow ? "less than 5% memory available" : "memory is available");
  cond("DiskPressure", diskLow, diskLow ? "LowDisk" : "SufficientDisk", diskLow ? "less than 5% of the data directory's disk is free" : "disk space is available");
  status.AddMember("conditions", std::move(conds), a);
  auto r = client_->patchStatus(kWorkers.withName(options_.name), kube::PatchType::kMerge, kube::toJson(st));
  return r ? Status::ok() : r.status();
}

Status Agent::renewLease() {
  return kube::renewNodeLease(*client_, kLeases.ns, options_.name, options_.leaseDurationSeconds);
}

void Agent::sync(const std::string& key) {
  traceStartPoint("sync");
  kube::JsonPtr obj = informer_->get(key);
  std::unique_ptr<AllocRunner> old;
  {
    std::lock_guard l(mu_);
    auto it = runners_.find(key);
    if (obj && kube::getString(*obj, {"spec", "workerName"}) != options_.name) obj = nullptr;
    if (it != runners_.end() && (!obj || it->second->uid() != kube::uid(*obj))) {
      old = std::move(it->second);  // deleted (or replaced by a new object of the same name)
      runners_.erase(it);
    } else if (it != runners_.end()) {
      it->second->update(obj);
      return;
    }
  }
  if (old) {
    std::string oldUid = old->uid();
    {
      std::lock_guard l(mu_);
      stoppingUids_.insert(oldUid);
    }
    old->stop();
    status_.forget(key);
    std::lock_guard l(mu_);
    stoppingUids_.erase(oldUid);
  }
  if (!obj) return;
  // Terminal allocations are history: never run them again (e.g. after an agent restart).
  std::string phase = kube::getString(*obj, {"status", "phase"});
  if (phase == "Succeeded" || phase == "Failed" || phase == "Lost") return;
  if (kube::getString(*obj, {"spec", "desiredState"}, "run") == "stop" ||
      kube::find(*obj, {"metadata", "deletionTimestamp"}) != nullptr) {
    return;
  }
  auto runner = std::make_unique<AllocRunner>(obj, ctx_);
  runner->start();
  std::lock_guard l(mu_);
  runners_[key] = std::move(runner);
}

void Agent::syncLoop() {
  while (auto key = queue_.get()) {
    try {
      sync(*key);
      queue_.forget(*key);
    } catch (const std::exception& e) {
      log("sync " + *key + ": " + e.what());
      queue_.addRateLimited(*key);
    }
    queue_.done(*key);
  }
}

void Agent::reapOrphans() {
  // Task cgroups whose allocation no longer exists for this worker: stop and remove them.
  std::set<std::string> live;
  for (const auto& obj : informer_->list()) live.insert(kube::uid(*obj));
  for (Driver* d : {exec_.get(), rawExec_.get()}) {
    if (d == nullptr) continue;
    for (auto& [id, h] : ctx_.recovered) {
      std::string uid = id.substr(0, id.find('.'));
      if (live.count(uid)) continue;
      log("stopping orphaned task " + id);
      (void)d->stop(h, SIGKILL, 0);
      (void)d->destroy(h);
    }
  }
}

void Agent::collectGarbage() {
  std::set<std::string> active, inApi;
  {
    std::lock_guard l(mu_);
    for (const auto& [key, r] : runners_) {
      if (!r->finished()) active.insert(r->uid());
    }
    active.insert(stoppingUids_.begin(), stoppingUids_.end());
  }
  for (const auto& obj : informer_->list()) {
    inApi.insert(kube::uid(*obj));
    // Not terminal in the API: a runner may not exist yet (just after a restart), but the tasks
    // may be running: never collect those.
    std::string phase = kube::getString(*obj, {"status", "phase"});
    if (phase != "Succeeded" && phase != "Failed" && phase != "Lost") active.insert(kube::uid(*obj));
  }
  std::error_code ec;
  std::vector<AllocDirInfo> dirs;
  const std::filesystem::path allocs = options_.dataDir + "/allocs";
  for (const auto& e : std::filesystem::directory_iterator(allocs, ec)) {
    std::string uid = e.path().filename().string();
    struct stat st {};
    // The state directory changes with every task state write: its mtime is when the allocation
    // last did anything (for a finished one, when it finished).
    std::string state = options_.dataDir + "/state/" + uid;
    if (::stat(state.c_str(), &st) != 0 && ::stat(e.path().c_str(), &st) != 0) continue;
    dirs.push_back({uid, active.count(uid) > 0, inApi.count(uid) > 0, static_cast<int64_t>(st.st_mtime)});
  }
  for (const auto& uid : gcPlan(std::move(dirs), options_.gc, static_cast<int64_t>(::time(nullptr)))) {
    // remove_all removes symlinks a task left, never what they point to.
    std::filesystem::remove_all(allocs / uid, ec);
    if (ec) log("gc: " + (allocs / uid).string() + ": " + ec.message());
    std::filesystem::remove_all(options_.dataDir + "/state/" + uid, ec);
    for (const char* d : {"/driver/exec", "/driver/raw"}) {
      for (const auto& f : std::filesystem::directory_iterator(options_.dataDir + d, ec)) {
        if (f.path().filename().string().rfind(uid + ".", 0) == 0) std::filesystem::remove(f.path(), ec);
      }
    }
    log("gc: removed the directories of finished allocation " + uid);
  }
}

std::map<std::string, std::string> Agent::workerLabels() const {
  std::map<std::string, std::string> labels = options_.labels;
  if (!gpus_.gpus.empty()) {
    // As the design brief promises: schedulers select GPU workers by these labels.
    labels["foxden.io/gpu-vendor"] = gpus_.gpus.front().vendor;
    std::string model;
    for (char ch : gpus_.gpus.front().model) {
      bool ok = std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.';
      model.push_back(ok ? ch : '-');
    }
    while (!model.empty() && !std::isalnum(static_cast<unsigned char>(model.back()))) model.pop_back();
    while (!model.empty() && !std::isalnum(static_cast<unsigned char>(model.front()))) model.erase(0, 1);
    if (model.size() > 63) model.resize(63);
    if (!model.empty()) labels["foxden.io/gpu-model"] = model;
  }
  return labels;
}

Status Agent::startLogServer() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::vector<std::string> names = {host, options_.listenHost};
  if (std::string ip = hostIp(); !ip.empty()) names.push_back(ip);
  auto cert = kube::pki::ensureSelfSignedCert(options_.dataDir + "/pki", "foxden-agent:" + options_.name, names);
  if (!cert) return cert.status();
  certSha256_ = cert->sha256;
  reviewer_ = std::make_unique<logs::TokenReviewer>(client_);
  logs::LogServerOptions lo;
  lo.host = options_.listenHost;
  lo.port = options_.listenPort;
  lo.certFile = cert->certFile;
  lo.keyFile = cert->keyFile;
  lo.dataDir = options_.dataDir;
  lo.allocation = [this](const std::string& key) { return informer_->get(key); };
  lo.ready = [this] { return informer_->hasSynced(); };
  lo.authenticate = [this](const std::string& token) { return reviewer_->review(token); };
  auto server = logs::LogServer::start(std::move(lo));
  if (!server) {
    return Status(server.status().code(), server.status().reason(),
                  "log endpoint on " + options_.listenHost + ":" + std::to_string(options_.listenPort) + ": " +
                      server.status().message());
  }
  logServer_ = std::move(*server);
  log("serving logs on https://" + options_.listenHost + ":" + std::to_string(logServer_->port()) +
      " (certificate sha256 " + certSha256_ + ")");
  return Status::ok();
}

Status Agent::run(const std::atomic<bool>& stop) {
  auto inventory = GpuDetector(options_.gpu).detect();
  if (inventory) {
    gpus_ = std::move(*inventory);
    for (const auto& w : gpus_.warnings) log("gpu: " + w);
    if (!gpus_.gpus.empty()) log("found " + std::to_string(gpus_.gpus.size()) + " GPU(s)");
    ctx_.gpus = &gpus_;
  } else {
    log("gpu detection failed: " + inventory.status().message() + " (advertising no GPUs)");
  }
  for (Driver* d : {exec_.get(), rawExec_.get()}) {
    if (d == nullptr) continue;
    for (auto& [id, h] : d->recover()) ctx_.recovered[id] = h;
  }
  if (!ctx_.recovered.empty()) log("found " + std::to_string(ctx_.recovered.size()) + " running task(s) to re-attach");
  // The informer exists before the log endpoint that reads it; it starts after registration.
  kube::InformerOptions io;
  io.resource = kAllocations;
  io.labelSelector = "foxden.io/worker=" + options_.name;
  informer_ = std::make_unique<kube::Informer>(client_, io);
  // Tasks matter more than their logs: an endpoint that cannot listen (port taken) is retried
  // with each Worker status update, and the Worker publishes no endpoint meanwhile.
  if (Status ls = startLogServer(); !ls) log(ls.message() + " (no log endpoint for now; retrying)");
  Status st;
  while (!stop && !(st = registerWorker())) {
    log("registration failed: " + st.message() + "; retrying");
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  status_.start();
  informer_->addEventHandler({[this](const kube::JsonPtr& o) {
                                std::string key = kube::Informer::keyOf(*o);
                                if (options_.traceStarts) {
                                  std::lock_guard l(mu_);
                                  firstSeen_.emplace(key, std::chrono::steady_clock::now());
                                }
                                queue_.add(key);
                              },
                              [this](const kube::JsonPtr&, const kube::JsonPtr& o) {
                                queue_.add(kube::Informer::keyOf(*o));
                              },
                              [this](const kube::JsonPtr& o) { queue_.add(kube::Informer::keyOf(*o)); }});
  informer_->start();
  std::thread syncer([this] {
    kube::nameThread("agent-sync");
    syncLoop();
  });
  bool reaped = false;
  auto nextGc = std::chrono::steady_clock::now();
  auto nextStatus = std::chrono::steady_clock::now() + std::chrono::seconds(options_.workerStatusSeconds);
  while (!stop) {
    Status ls = renewLease();
    if (!ls) log("lease renewal failed: " + ls.message());
    if (!reaped && informer_->hasSynced()) {
      reapOrphans();
      reaped = true;
    }
    if (reaped && std::chrono::steady_clock::now() >= nextGc) {
      collectGarbage();
      nextGc = std::chrono::steady_clock::now() + std::chrono::seconds(options_.gc.intervalSeconds);
    }
    if (std::chrono::steady_clock::now() >= nextStatus) {
      if (!logServer_) (void)startLogServer();
      Status ws = updateWorkerStatus();
      if (!ws) log("worker status update failed: " + ws.message());
      nextStatus = std::chrono::steady_clock::now() + std::chrono::seconds(options_.workerStatusSeconds);
    }
    for (int i = 0; i < options_.heartbeatMillis / 50 && !stop; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (logServer_) logServer_->stop();
  queue_.shutDown();
  syncer.join();
  informer_->stop();
  return Status::ok();
}

}  // namespace nodeagent
