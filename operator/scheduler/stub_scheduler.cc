// TEMPORARY stub of scheduler.h for the operator branch only, until the real scheduler (branch
// `sched`) is merged; the lead drops this file when merging. First fit over ready, schedulable
// workers with the driver, cpu/memory/GPU count free, In/NotIn/Exists/DoesNotExist/Gt/Lt
// constraints and ports; no ranking, affinities, spread or preemption.

#include <algorithm>
#include <map>
#include <set>

#include "operator/scheduler/scheduler.h"

namespace scheduler {

struct ClusterState::Impl {
  std::map<std::string, WorkerInfo> workers;
  std::map<std::string, AllocInfo> allocs;
};

ClusterState::ClusterState() : impl_(new Impl) {}
ClusterState::~ClusterState() { delete impl_; }
ClusterState::ClusterState(ClusterState&& o) noexcept : impl_(o.impl_) { o.impl_ = new Impl; }
ClusterState& ClusterState::operator=(ClusterState&& o) noexcept {
  std::swap(impl_, o.impl_);
  return *this;
}
void ClusterState::upsertWorker(WorkerInfo w) { impl_->workers[w.name] = std::move(w); }
void ClusterState::removeWorker(const std::string& name) { impl_->workers.erase(name); }
void ClusterState::addAlloc(AllocInfo a) { impl_->allocs[a.uid] = std::move(a); }
void ClusterState::removeAlloc(const std::string& uid) { impl_->allocs.erase(uid); }
const WorkerInfo* ClusterState::worker(const std::string& name) const {
  auto it = impl_->workers.find(name);
  return it == impl_->workers.end() ? nullptr : &it->second;
}
size_t ClusterState::workerCount() const { return impl_->workers.size(); }

std::string PlacementFailure::message() const {
  std::string m = "0/" + std::to_string(workersEvaluated) + " workers are available";
  std::string sep = ": ";
  for (const auto& [r, n] : reasons) {
    m += sep + std::to_string(n) + " " + r;
    sep = ", ";
  }
  return m + ".";
}

Scheduler::Scheduler(ClusterState& state, SchedulerOptions options) : state_(state), options_(options) {}

namespace {
bool meets(const WorkerInfo& w, const Requirement& r) {
  auto it = w.labels.find(r.key);
  std::string v = it == w.labels.end() ? "" : it->second;
  if (r.key == "foxden.io/worker") v = w.name;
  bool has = it != w.labels.end() || r.key == "foxden.io/worker";
  if (r.op == "In") return has && std::find(r.values.begin(), r.values.end(), v) != r.values.end();
  if (r.op == "NotIn") return !has || std::find(r.values.begin(), r.values.end(), v) == r.values.end();
  if (r.op == "Exists") return has;
  if (r.op == "DoesNotExist") return !has;
  if (r.op == "Gt" || r.op == "Lt") {
    if (!has || r.values.empty()) return false;
    try {
      long long a = std::stoll(v), b = std::stoll(r.values[0]);
      return r.op == "Gt" ? a > b : a < b;
    } catch (...) {
      return false;
    }
  }
  return true;  // DistinctHosts: checked against allocations
}
}  // namespace

std::optional<std::string> Scheduler::infeasibleReason(const PlacementRequest& req, const std::string& name) const {
  const WorkerInfo* w = state_.worker(name);
  if (w == nullptr) return "unknown worker";
  if (!w->ready) return "worker not ready";
  if (!w->schedulable) return "worker unschedulable";
  if (std::find(w->drivers.begin(), w->drivers.end(), req.driver) == w->drivers.end()) return "missing driver " + req.driver;
  for (const auto& c : req.constraints) {
    if (!meets(*w, c)) return "constraint " + c.key + " " + c.op;
  }
  int64_t cpu = 0, mem = 0;
  std::set<int> ports;
  int gpusUsed = 0;
  for (const auto& [uid, a] : state_.impl().allocs) {
    if (a.worker != name) continue;
    cpu += a.cpuMilli;
    mem += a.memoryBytes;
    gpusUsed += static_cast<int>(a.gpus.size());
    for (const auto& p : a.ports) ports.insert(p.value);
    bool distinct = std::any_of(req.constraints.begin(), req.constraints.end(), [](auto& c) { return c.op == "DistinctHosts"; });
    if (distinct && a.jobKey == req.jobKey && a.group == req.group) return "distinct hosts";
    if (req.distinctHostsJob && a.jobKey == req.jobKey) return "distinct hosts";
  }
  if (cpu + req.cpuMilli > w->cpuMilli) return "insufficient cpu";
  if (mem + req.memoryBytes > w->memoryBytes) return "insufficient memory";
  if (req.gpus.count > 0) {
    int have = 0;
    for (const auto& g : w->gpus) have += (req.gpus.vendor.empty() || g.vendor == req.gpus.vendor) ? 1 : 0;
    if (have - gpusUsed < req.gpus.count) return "missing " + (req.gpus.vendor.empty() ? std::string("nvidia") : req.gpus.vendor) + ".com/gpu";
  }
  for (const auto& p : req.ports) {
    if (p.staticPort != 0 && ports.count(p.staticPort)) return "port " + std::to_string(p.staticPort) + " in use";
  }
  return std::nullopt;
}

PlacementResult Scheduler::placeOn(const PlacementRequest& req, const std::string& uid, const std::string& name) {
  PlacementFailure f;
  f.workersEvaluated = 1;
  if (auto why = infeasibleReason(req, name)) {
    f.reasons[*why]++;
    return f;
  }
  const WorkerInfo& w = *state_.worker(name);
  std::set<int> used;
  int gpusUsed = 0;
  for (const auto& [u, a] : state_.impl().allocs) {
    if (a.worker != name) continue;
    for (const auto& p : a.ports) used.insert(p.value);
    gpusUsed += static_cast<int>(a.gpus.size());
  }
  Placement p;
  p.worker = name;
  int next = options_.dynamicPortMin;
  for (const auto& pr : req.ports) {
    int v = pr.staticPort;
    if (v == 0) {
      while (used.count(next)) ++next;
      v = next++;
    }
    used.insert(v);
    p.ports.push_back({pr.name, v});
  }
  for (const auto& g : w.gpus) {
    if (static_cast<int>(p.gpus.size()) >= req.gpus.count) break;
    if (!req.gpus.vendor.empty() && g.vendor != req.gpus.vendor) continue;
    if (gpusUsed-- > 0) continue;
    p.gpus.push_back(g);
  }
  AllocInfo a{uid, name, req.jobKey, req.group, req.priority, req.cpuMilli, req.memoryBytes, p.gpus, p.ports};
  state_.addAlloc(std::move(a));
  return p;
}

PlacementResult Scheduler::place(const PlacementRequest& req, const std::string& uid) {
  PlacementFailure f;
  std::vector<std::string> order;
  for (const auto& [n, w] : state_.impl().workers) order.push_back(n);
  // Prefer workers not in penaltyWorkers.
  std::stable_partition(order.begin(), order.end(), [&](const std::string& n) {
    return std::find(req.penaltyWorkers.begin(), req.penaltyWorkers.end(), n) == req.penaltyWorkers.end();
  });
  for (const auto& n : order) {
    f.workersEvaluated++;
    if (auto why = infeasibleReason(req, n)) {
      f.reasons[*why]++;
      continue;
    }
    return placeOn(req, uid, n);
  }
  return f;
}

}  // namespace scheduler
