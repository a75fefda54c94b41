#include "operator/scheduler/feasible.h"

#include <algorithm>
#include <string>

#include "kube/quantity.h"

namespace scheduler {
namespace {

bool holds(const std::vector<int>& ports, int port) { return std::binary_search(ports.begin(), ports.end(), port); }

int distinctInRange(const std::vector<int>& ports, int lo, int hi) {
  auto first = std::lower_bound(ports.begin(), ports.end(), lo);
  auto last = std::upper_bound(first, ports.end(), hi);
  int n = 0;
  for (auto it = first; it != last; ++it) {
    if (it == first || *it != *(it - 1)) ++n;
  }
  return n;
}

uint64_t nextRandom(uint64_t& state) {  // splitmix64: cheap, and deterministic for tests
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

bool isResourceReason(ReasonCode r) {
  return r == kInsufficientCpu || r == kInsufficientMemory || r == kMissingGpu || r == kGpuMismatch ||
         r == kNoDynamicPort || (r >= kStaticPort && r < kConstraint);
}

// --- Matcher ---

Matcher Matcher::compile(const ClusterState::Impl& s, const Requirement& r) {
  Matcher m;
  if (r.op == "In") m.op = Op::kIn;
  else if (r.op == "NotIn") m.op = Op::kNotIn;
  else if (r.op == "Exists") m.op = Op::kExists;
  else if (r.op == "DoesNotExist") m.op = Op::kDoesNotExist;
  else if (r.op == "Gt") m.op = Op::kGt;
  else if (r.op == "Lt") m.op = Op::kLt;
  m.driverAttr = r.key == kAttrDriver;
  m.key = s.keys.find(r.key);
  for (const auto& v : r.values) {
    uint32_t id = s.values.find(v);
    if (id != kNoId) m.values.push_back(id);
  }
  if ((m.op == Op::kGt || m.op == Op::kLt) && r.values.size() == 1) {
    auto q = kube::Quantity::parse(r.values[0]);
    m.numberOk = q.isOk();
    if (q.isOk()) m.number = q->nanoValue();
  }
  return m;
}

bool Matcher::matches(const ClusterState::Impl& s, const WorkerSlot& w) const {
  auto in = [this](uint32_t v) { return std::find(values.begin(), values.end(), v) != values.end(); };
  if (driverAttr) {
    switch (op) {
      case Op::kIn: return std::any_of(w.driverValues.begin(), w.driverValues.end(), in);
      case Op::kNotIn: return std::none_of(w.driverValues.begin(), w.driverValues.end(), in);
      case Op::kExists: return !w.driverValues.empty();
      case Op::kDoesNotExist: return w.driverValues.empty();
      default: return false;
    }
  }
  uint32_t v = key == kNoId ? kNoId : w.label(key);
  switch (op) {
    case Op::kIn: return v != kNoId && in(v);
    case Op::kNotIn: return v == kNoId || !in(v);  // as Kubernetes: an absent label is "not in"
    case Op::kExists: return v != kNoId;
    case Op::kDoesNotExist: return v == kNoId;
    case Op::kGt: return v != kNoId && numberOk && s.valueIsNumber[v] && s.valueNumber[v] > number;
    case Op::kLt: return v != kNoId && numberOk && s.valueIsNumber[v] && s.valueNumber[v] < number;
    case Op::kNever: return false;
  }
  return false;
}

// --- Feasibility ---

Feasibility::Feasibility(const ClusterState::Impl& state, const PlacementRequest& req, int dynamicPortMin,
                         int dynamicPortMax)
    : state_(state), req_(req), portMin_(dynamicPortMin), portMax_(dynamicPortMax) {
  uint32_t bit = state.drivers.find(req.driver);
  driverBit_ = bit < 64 ? uint64_t{1} << bit : 0;
  for (size_t i = 0; i < req.constraints.size(); ++i) {
    if (req.constraints[i].op == "DistinctHosts") {
      distinctGroup_ = true;
      continue;
    }
    constraints_.push_back(Matcher::compile(state, req.constraints[i]));
    constraintIndex_.push_back(i);
  }
  job_ = state.job(req.jobKey);
  group_ = state.group(req.jobKey, req.group);

  gpuCount_ = req.gpus.count;
  if (!req.gpus.vendor.empty()) {
    gpuVendorAny_ = false;
    gpuVendor_ = state.vendors.find(req.gpus.vendor);
  }
  if (!req.gpus.models.empty()) {
    gpuModelsAny_ = false;
    for (const auto& m : req.gpus.models) {
      uint32_t id = state.models.find(m);
      if (id != kNoId) gpuModels_.push_back(id);
    }
  }

  for (const auto& p : req.ports) {
    if (p.staticPort == 0) {
      ++dynamicPorts_;
    } else {
      staticPorts_.push_back(p.staticPort);
      if (p.staticPort >= portMin_ && p.staticPort <= portMax_) ++staticInRange_;
    }
  }
}

ReasonCode Feasibility::check(uint32_t slot) const {
  const WorkerSlot& w = state_.workers[slot];
  if (!w.known) return kUnknownWorker;
  if (!w.eligible) return w.info.ready ? kUnschedulable : kNotReady;
  if ((w.driverMask & driverBit_) == 0) return kMissingDriver;
  for (size_t i = 0; i < constraints_.size(); ++i) {
    if (!constraints_[i].matches(state_, w)) return kConstraint + static_cast<ReasonCode>(constraintIndex_[i]);
  }
  if (distinctGroup_ && group_ != nullptr && group_->perWorker.count(slot) != 0) return kDistinctHosts;
  if (req_.distinctHostsJob && job_ != nullptr && job_->perWorker.count(slot) != 0) return kDistinctHosts;
  return checkResources(w, Usage::of(w));
}

bool Feasibility::gpuUsable(const WorkerSlot& w, size_t i, bool withAttributes) const {
  if (!gpuVendorAny_ && w.gpuVendor[i] != gpuVendor_) return false;
  if (!withAttributes) return true;
  if (!gpuModelsAny_ && std::find(gpuModels_.begin(), gpuModels_.end(), w.gpuModel[i]) == gpuModels_.end()) {
    return false;
  }
  return w.info.gpus[i].memoryBytes >= req_.gpus.minMemoryBytes;
}

ReasonCode Feasibility::checkResources(const WorkerSlot& w, const Usage& use) const {
  if (use.cpu + req_.cpuMilli > w.cpuMilli) return kInsufficientCpu;
  if (use.memory + req_.memoryBytes > w.memoryBytes) return kInsufficientMemory;
  if (gpuCount_ > 0) {
    int freeOfVendor = 0;
    int matching = 0;
    for (size_t i = 0; i < w.info.gpus.size(); ++i) {
      if ((*use.gpuUse)[i] != 0 || !gpuUsable(w, i, false)) continue;
      ++freeOfVendor;
      if (gpuUsable(w, i, true)) ++matching;
    }
    if (freeOfVendor < gpuCount_) return kMissingGpu;
    if (matching < gpuCount_) return kGpuMismatch;
  }
  for (size_t i = 0; i < staticPorts_.size(); ++i) {
    if (holds(*use.ports, staticPorts_[i])) return kStaticPort + static_cast<ReasonCode>(i);
  }
  if (dynamicPorts_ > 0) {
    int free = portMax_ - portMin_ + 1 - distinctInRange(*use.ports, portMin_, portMax_) - staticInRange_;
    if (free < dynamicPorts_) return kNoDynamicPort;
  }
  return kFits;
}

std::string Feasibility::describe(ReasonCode r) const {
  switch (r) {
    case kNotReady: return "not ready";
    case kUnschedulable: return "unschedulable";
    case kMissingDriver: return "missing driver " + req_.driver;
    case kDistinctHosts: return "distinct hosts";
    case kInsufficientCpu: return "insufficient cpu";
    case kInsufficientMemory: return "insufficient memory";
    case kMissingGpu: return "missing " + (req_.gpus.vendor.empty() ? std::string("gpu") : req_.gpus.vendor + ".com/gpu");
    case kGpuMismatch: return "no GPU matching model/memory";
    case kNoDynamicPort: return "no free dynamic port";
    case kUnknownWorker: return "unknown worker";
    default: break;
  }
  if (r >= kConstraint) {
    const Requirement& c = req_.constraints[r - kConstraint];
    std::string s = "constraint " + c.key + " " + c.op;
    for (size_t i = 0; i < c.values.size(); ++i) s += (i == 0 ? " " : ",") + c.values[i];
    return s + " not met";
  }
  if (r >= kStaticPort) return "port " + std::to_string(staticPorts_[r - kStaticPort]) + " in use";
  return "fits";
}

std::vector<int> Feasibility::chooseGpus(const WorkerSlot& w, const Usage& use) const {
  std::vector<int> chosen;
  for (size_t i = 0; i < w.info.gpus.size() && static_cast<int>(chosen.size()) < gpuCount_; ++i) {
    if ((*use.gpuUse)[i] == 0 && gpuUsable(w, i, true)) chosen.push_back(static_cast<int>(i));
  }
  return chosen;
}

std::vector<PortAssignment> Feasibility::choosePorts(const Usage& use, uint64_t& rng) const {
  std::vector<PortAssignment> out;
  out.reserve(req_.ports.size());
  std::vector<int> taken;  // chosen by this request so far
  auto isFree = [&](int p) {
    return !holds(*use.ports, p) && std::find(taken.begin(), taken.end(), p) == taken.end() &&
           std::find(staticPorts_.begin(), staticPorts_.end(), p) == staticPorts_.end();
  };
  int span = portMax_ - portMin_ + 1;
  for (const auto& p : req_.ports) {
    int value = p.staticPort;
    if (value == 0) {
      // As Nomad: a few random draws (ports rarely crowd), then a scan from a random start.
      for (int attempt = 0; attempt < 20 && value == 0; ++attempt) {
        int candidate = portMin_ + static_cast<int>(nextRandom(rng) % static_cast<uint64_t>(span));
        if (isFree(candidate)) value = candidate;
      }
      int start = static_cast<int>(nextRandom(rng) % static_cast<uint64_t>(span));
      for (int k = 0; k < span && value == 0; ++k) {
        int candidate = portMin_ + (start + k) % span;
        if (isFree(candidate)) value = candidate;
      }
      taken.push_back(value);
    }
    out.push_back({p.name, value});
  }
  return out;
}

}  // namespace scheduler
