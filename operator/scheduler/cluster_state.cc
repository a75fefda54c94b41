#include "operator/scheduler/cluster_state.h"

#include <algorithm>
#include <string>

#include "kube/quantity.h"

namespace scheduler {

uint32_t Interner::intern(const std::string& s) {
  auto [it, inserted] = ids_.try_emplace(s, static_cast<uint32_t>(names_.size()));
  if (inserted) names_.push_back(s);
  return it->second;
}

uint32_t Interner::find(const std::string& s) const {
  auto it = ids_.find(s);
  return it == ids_.end() ? kNoId : it->second;
}

uint32_t WorkerSlot::label(uint32_t key) const {
  auto it = std::lower_bound(labels.begin(), labels.end(), key,
                             [](const std::pair<uint32_t, uint32_t>& l, uint32_t k) { return l.first < k; });
  return it != labels.end() && it->first == key ? it->second : kNoId;
}

ClusterState::Impl::Impl() {
  keyWorker = keys.intern(std::string(kAttrWorker));
  keyGpuMemory = keys.intern(std::string(kAttrGpuMemory));
}

void ClusterState::Impl::reserve(size_t workerCount, size_t allocCount) {
  workers.reserve(workerCount);
  workerByName.reserve(workerCount);
  allocByUid.reserve(allocCount);
}

uint32_t ClusterState::Impl::internValue(const std::string& v) {
  uint32_t id = values.intern(v);
  if (id == valueNumber.size()) {
    auto q = kube::Quantity::parse(v);
    valueIsNumber.push_back(q.isOk());
    valueNumber.push_back(q.isOk() ? q->nanoValue() : 0);
  }
  return id;
}

uint32_t ClusterState::Impl::slotFor(const std::string& worker) {
  auto [it, inserted] = workerByName.try_emplace(worker, static_cast<uint32_t>(workers.size()));
  if (inserted) {
    workers.emplace_back();
    workers.back().info.name = worker;
  }
  return it->second;
}

void ClusterState::Impl::resolveGpus(AllocSlot& a, const WorkerSlot& w) const {
  a.gpuSlots.assign(a.info.gpus.size(), -1);
  for (size_t i = 0; i < a.info.gpus.size(); ++i) {
    const Gpu& g = a.info.gpus[i];
    for (size_t j = 0; j < w.info.gpus.size(); ++j) {
      if (w.info.gpus[j].index == g.index && w.info.gpus[j].vendor == g.vendor) {
        a.gpuSlots[i] = static_cast<int>(j);
        break;
      }
    }
  }
}

void ClusterState::Impl::upsertWorker(WorkerInfo info) {
  uint32_t id = slotFor(info.name);
  WorkerSlot& w = workers[id];
  bool wasKnown = w.known;
  bool hadGpus = !w.info.gpus.empty();
  if (!w.known) ++knownWorkers;
  w.known = true;
  w.eligible = info.ready && info.schedulable;
  w.cpuMilli = info.cpuMilli;
  w.memoryBytes = info.memoryBytes;

  w.driverMask = 0;
  w.driverValues.clear();
  for (const auto& d : info.drivers) {
    uint32_t bit = drivers.intern(d);
    if (bit < 64) w.driverMask |= uint64_t{1} << bit;
    w.driverValues.push_back(internValue(d));
  }

  std::vector<std::pair<uint32_t, uint32_t>> labels;
  labels.reserve(info.labels.size() + 2);
  for (const auto& [k, v] : info.labels) {
    uint32_t key = keys.intern(k);
    if (key != keyWorker && key != keyGpuMemory) labels.emplace_back(key, internValue(v));
  }
  labels.emplace_back(keyWorker, internValue(info.name));
  int64_t gpuMemory = 0;
  for (const auto& g : info.gpus) gpuMemory = std::max(gpuMemory, g.memoryBytes);
  if (!info.gpus.empty()) labels.emplace_back(keyGpuMemory, internValue(std::to_string(gpuMemory)));
  std::sort(labels.begin(), labels.end());
  if (labels != w.labels && !w.allocs.empty()) {
    // Spread counts per label value are stale for the groups with allocations here: rebuilt on use.
    for (uint32_t a : w.allocs) {
      const AllocInfo& ai = allocs[a].info;
      auto j = jobs.find(ai.jobKey);
      if (j == jobs.end()) continue;
      auto g = j->second.groups.find(ai.group);
      if (g != j->second.groups.end()) g->second.spreadCounts.clear();
    }
  }
  w.labels = std::move(labels);

  w.gpuVendor.clear();
  w.gpuModel.clear();
  for (const auto& g : info.gpus) {
    w.gpuVendor.push_back(static_cast<uint8_t>(std::min<uint32_t>(vendors.intern(g.vendor), 255)));
    w.gpuModel.push_back(models.intern(g.model));
  }
  w.info = std::move(info);
  // GPU indexes may have changed meaning: recount what the allocations here hold.
  w.gpuUse.assign(w.info.gpus.size(), 0);
  for (uint32_t a : w.allocs) {
    resolveGpus(allocs[a], w);
    for (int s : allocs[a].gpuSlots) {
      if (s >= 0) ++w.gpuUse[static_cast<size_t>(s)];
    }
  }
  if (!wasKnown || hadGpus != !w.info.gpus.empty()) ++generation;
}

void ClusterState::Impl::removeWorker(const std::string& name) {
  auto it = workerByName.find(name);
  if (it == workerByName.end() || !workers[it->second].known) return;
  WorkerSlot& w = workers[it->second];
  // The slot (and its labels) stay while allocations still count against it.
  w.known = false;
  w.eligible = false;
  --knownWorkers;
  ++generation;
}

void ClusterState::Impl::account(uint32_t slot, int sign) {
  AllocSlot& a = allocs[slot];
  WorkerSlot& w = workers[a.worker];
  w.usedCpu += sign * a.info.cpuMilli;
  w.usedMemory += sign * a.info.memoryBytes;
  for (int s : a.gpuSlots) {
    if (s >= 0) w.gpuUse[static_cast<size_t>(s)] = static_cast<uint16_t>(w.gpuUse[static_cast<size_t>(s)] + sign);
  }
  for (const auto& p : a.info.ports) {
    if (sign > 0) {
      w.ports.insert(std::upper_bound(w.ports.begin(), w.ports.end(), p.value), p.value);
    } else {
      auto pit = std::lower_bound(w.ports.begin(), w.ports.end(), p.value);
      if (pit != w.ports.end() && *pit == p.value) w.ports.erase(pit);
    }
  }
  if (sign > 0) {
    a.posInWorker = static_cast<uint32_t>(w.allocs.size());
    w.allocs.push_back(slot);
    w.allocPriority.push_back(a.info.priority);
  } else {
    uint32_t moved = w.allocs.back();
    w.allocs[a.posInWorker] = moved;
    w.allocPriority[a.posInWorker] = w.allocPriority.back();
    allocs[moved].posInWorker = a.posInWorker;
    w.allocs.pop_back();
    w.allocPriority.pop_back();
  }

  JobIndex& j = jobs[a.info.jobKey];
  GroupIndex& g = j.groups[a.info.group];
  j.total += sign;
  g.total += sign;
  auto bump = [sign](std::unordered_map<uint32_t, int>& m, uint32_t k) {
    int& n = m[k];
    n += sign;
    if (n == 0) m.erase(k);
  };
  bump(j.perWorker, a.worker);
  bump(g.perWorker, a.worker);
  for (auto& [key, counts] : g.spreadCounts) bump(counts, w.label(key));
  if (j.total == 0) jobs.erase(a.info.jobKey);
}

void ClusterState::Impl::addAlloc(AllocInfo info) {
  removeAlloc(info.uid);
  uint32_t slot;
  if (!freeAllocSlots.empty()) {
    slot = freeAllocSlots.back();
    freeAllocSlots.pop_back();
  } else {
    slot = static_cast<uint32_t>(allocs.size());
    allocs.emplace_back();
  }
  AllocSlot& a = allocs[slot];
  a.live = true;
  a.worker = slotFor(info.worker);
  a.info = std::move(info);
  resolveGpus(a, workers[a.worker]);
  allocByUid.emplace(a.info.uid, slot);
  ++liveAllocs;
  account(slot, +1);
}

void ClusterState::Impl::removeAlloc(const std::string& uid) {
  auto it = allocByUid.find(uid);
  if (it == allocByUid.end()) return;
  uint32_t slot = it->second;
  allocByUid.erase(it);
  account(slot, -1);
  AllocSlot& a = allocs[slot];
  a.live = false;
  a.info = AllocInfo{};
  a.gpuSlots.clear();
  freeAllocSlots.push_back(slot);
  --liveAllocs;
}

const JobIndex* ClusterState::Impl::job(const std::string& key) const {
  auto it = jobs.find(key);
  return it == jobs.end() ? nullptr : &it->second;
}

const GroupIndex* ClusterState::Impl::group(const std::string& jobKey, const std::string& group) const {
  const JobIndex* j = job(jobKey);
  if (j == nullptr) return nullptr;
  auto it = j->groups.find(group);
  return it == j->groups.end() ? nullptr : &it->second;
}

const std::unordered_map<uint32_t, int>& ClusterState::Impl::spreadCounts(const std::string& jobKey,
                                                                          const std::string& group,
                                                                          uint32_t key) {
  static const std::unordered_map<uint32_t, int> kEmpty;
  auto j = jobs.find(jobKey);
  if (j == jobs.end()) return kEmpty;
  auto g = j->second.groups.find(group);
  if (g == j->second.groups.end()) return kEmpty;
  GroupIndex& gi = g->second;
  for (auto& [k, counts] : gi.spreadCounts) {
    if (k == key) return counts;
  }
  std::unordered_map<uint32_t, int> counts;
  for (auto [worker, n] : gi.perWorker) counts[workers[worker].label(key)] += n;
  gi.spreadCounts.emplace_back(key, std::move(counts));
  return gi.spreadCounts.back().second;
}

// --- ClusterState: the public face ---

ClusterState::ClusterState() : impl_(new Impl) {}
ClusterState::~ClusterState() { delete impl_; }
// A moved-from state may only be destroyed or assigned to.
ClusterState::ClusterState(ClusterState&& o) noexcept : impl_(o.impl_) { o.impl_ = nullptr; }
ClusterState& ClusterState::operator=(ClusterState&& o) noexcept {
  std::swap(impl_, o.impl_);
  return *this;
}

void ClusterState::reserve(size_t workers, size_t allocs) { impl_->reserve(workers, allocs); }
void ClusterState::upsertWorker(WorkerInfo w) { impl_->upsertWorker(std::move(w)); }
void ClusterState::removeWorker(const std::string& name) { impl_->removeWorker(name); }
void ClusterState::addAlloc(AllocInfo a) { impl_->addAlloc(std::move(a)); }
void ClusterState::removeAlloc(const std::string& uid) { impl_->removeAlloc(uid); }

const WorkerInfo* ClusterState::worker(const std::string& name) const {
  auto it = impl_->workerByName.find(name);
  if (it == impl_->workerByName.end() || !impl_->workers[it->second].known) return nullptr;
  return &impl_->workers[it->second].info;
}

size_t ClusterState::workerCount() const { return impl_->knownWorkers; }

const AllocInfo* ClusterState::alloc(const std::string& uid) const {
  auto it = impl_->allocByUid.find(uid);
  return it == impl_->allocByUid.end() ? nullptr : &impl_->allocs[it->second].info;
}

size_t ClusterState::allocCount() const { return impl_->liveAllocs; }

}  // namespace scheduler
