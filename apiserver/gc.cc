#include "apiserver/gc.h"
#include "kube/thread_name.h"

#include <chrono>
#include <optional>
#include <string_view>

#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

namespace apiserver {

using kube::Json;
using kube::JsonValue;

namespace {

// How long the collector lets a stream of events gather between two wake-ups.
constexpr std::chrono::milliseconds kBatchWindow{5};

bool removeFinalizer(Json& d, std::string_view f) {
  JsonValue* fs = kube::find(d, {"metadata", "finalizers"});
  if (fs == nullptr || !fs->IsArray()) return false;
  for (auto it = fs->Begin(); it != fs->End(); ++it) {
    if (kube::view(*it) == f) {
      fs->Erase(it);
      return true;
    }
  }
  return false;
}

// A RapidJSON SAX handler that hands the top-level "metadata" member's events to a document and
// stops the parse once that member is complete: the graph needs only metadata, and the server
// writes objects with metadata before spec and status, so most of each object is never read.
class MetadataOnly {
 public:
  explicit MetadataOnly(Json& out) : out_(out) {}
  bool done() const { return done_; }

  // RapidJSON's Handler concept names these methods.
  // NOLINTBEGIN(readability-identifier-naming)
  bool Null() { return value([&] { return out_.Null(); }); }
  bool Bool(bool b) { return value([&] { return out_.Bool(b); }); }
  bool Int(int i) { return value([&] { return out_.Int(i); }); }
  bool Uint(unsigned u) { return value([&] { return out_.Uint(u); }); }
  bool Int64(int64_t i) { return value([&] { return out_.Int64(i); }); }
  bool Uint64(uint64_t u) { return value([&] { return out_.Uint64(u); }); }
  bool Double(double d) { return value([&] { return out_.Double(d); }); }
  bool RawNumber(const char* str, rapidjson::SizeType len, bool) {
    return value([&] { return out_.RawNumber(str, len, true); });
  }
  bool String(const char* str, rapidjson::SizeType len, bool) {
    return value([&] { return out_.String(str, len, true); });
  }
  bool StartObject() { return open([&] { return out_.StartObject(); }); }
  bool Key(const char* str, rapidjson::SizeType len, bool) {
    if (capturing_) return out_.Key(str, len, true);
    metadataNext_ = depth_ == 1 && std::string_view(str, len) == "metadata";
    return true;
  }
  bool EndObject(rapidjson::SizeType n) { return close([&] { return out_.EndObject(n); }); }
  bool StartArray() { return open([&] { return out_.StartArray(); }); }
  bool EndArray(rapidjson::SizeType n) { return close([&] { return out_.EndArray(n); }); }
  // NOLINTEND(readability-identifier-naming)

 private:
  // A scalar: inside metadata it is copied; as metadata itself (not an object) it ends the scan.
  template <typename F>
  bool value(F f) {
    if (capturing_) return f();
    if (metadataNext_) return false;  // metadata is not an object: stop, with nothing captured
    return true;
  }
  template <typename F>
  bool open(F f) {
    ++depth_;
    if (metadataNext_ && depth_ == 2) {
      metadataNext_ = false;
      capturing_ = true;
    }
    return capturing_ ? f() : true;
  }
  template <typename F>
  bool close(F f) {
    --depth_;
    if (!capturing_) return true;
    if (!f()) return false;
    if (depth_ == 1) {  // metadata's own end
      capturing_ = false;
      done_ = true;
      return false;  // stop the parse here
    }
    return true;
  }

  Json& out_;
  int depth_ = 0;
  bool metadataNext_ = false;
  bool capturing_ = false;
  bool done_ = false;
};

// {"metadata": <the object's metadata>} from a stored object's JSON text, or nothing if the text
// is not an object with an object for metadata. Stored objects were validated when written.
std::optional<Json> parseMetadata(const std::string& json) {
  Json d;
  MetadataOnly filter(d);
  auto generate = [&](Json& handler) {
    if (!handler.StartObject() || !handler.Key("metadata", 8, false)) return false;
    rapidjson::Reader reader;
    rapidjson::MemoryStream in(json.data(), json.size());
    reader.Parse<rapidjson::kParseIterativeFlag>(in, filter);  // ends early, by design
    return filter.done() && handler.EndObject(1);
  };
  d.Populate(generate);
  if (!filter.done() || !d.IsObject() || !d["metadata"].IsObject()) return std::nullopt;
  return d;
}

}  // namespace

void GarbageCollector::start() {
  rebuild();
  thread_ = std::thread([this] {
    kube::nameThread("api-gc");
    run();
  });
}

void GarbageCollector::stop() {
  stopping_ = true;
  {
    std::lock_guard l(watcherMu_);
    if (watcher_) watcher_->close();
  }
  if (thread_.joinable()) thread_.join();
}

void GarbageCollector::run() {
  auto lastRetry = std::chrono::steady_clock::now();
  // Under a stream of writes, the next events gather for a window and are taken in one wake-up,
  // rather than one per commit: the collector's work is not on any request's path.
  StreamPacer pacer(kBatchWindow);
  while (!stopping_) {
    size_t applied = 0;
    if (!drain(1000, &applied)) {
      if (stopping_) return;
      rebuild();  // fell behind the history (or the store restarted its watchers): start over
      continue;
    }
    // Work is done once the events that arrived together have been applied, so a burst of
    // deletions is handled in one go. Failed writes are retried at most once a second.
    bool retryDue = std::chrono::steady_clock::now() - lastRetry > std::chrono::seconds(1);
    if (!retry_.empty() && retryDue) {
      dirty_.insert(retry_.begin(), retry_.end());
      dirtyNamespaces_.insert(retryNamespaces_.begin(), retryNamespaces_.end());
      retry_.clear();
      retryNamespaces_.clear();
      lastRetry = std::chrono::steady_clock::now();
    }
    try {
      processDirty();
    } catch (const std::exception&) {
      // Nothing is lost: a failed write leaves the store as it was; the next rebuild sees it.
      watcher_->close();
    }
    if (applied > 0 && !stopping_) (void)pacer.pace();
  }
}

size_t GarbageCollector::pass() {
  if (!watcher_ || watcher_->closed()) rebuild();
  (void)drain(0);
  dirty_.insert(retry_.begin(), retry_.end());
  dirtyNamespaces_.insert(retryNamespaces_.begin(), retryNamespaces_.end());
  retry_.clear();
  retryNamespaces_.clear();
  return processDirty();
}

void GarbageCollector::rebuild() {
  nodes_.clear();
  uidOfKey_.clear();
  dependents_.clear();
  members_.clear();
  dirty_.clear();
  dirtyNamespaces_.clear();
  retry_.clear();
  retryNamespaces_.clear();
  // Watch first, then list: an object written in between is in both, and its event (a revision
  // the node already has) is skipped. Nothing can be missed.
  for (;;) {
    auto w = storage_.watch("", storage_.currentRv());
    if (w) {
      std::lock_guard l(watcherMu_);
      watcher_ = *w;
      break;
    }
    if (stopping_) return;
  }
  for (const auto& [key, e] : storage_.list("")) upsert(key, e.rv, *e.json);
  for (const auto& [uid, n] : nodes_) {
    if (!n.owners.empty() || n.deleting) dirty_.insert(uid);
    if (n.isNamespace && n.deleting) dirtyNamespaces_.insert(n.name);
  }
}

bool GarbageCollector::drain(int timeoutMs, size_t* applied) {
  std::vector<Event> events;
  bool open = watcher_->next(events, std::chrono::milliseconds(timeoutMs));
  for (const auto& e : events) apply(e);
  if (applied != nullptr) *applied += events.size();
  // More may have queued meanwhile: take them now, without waiting.
  while (open && !events.empty()) {
    events.clear();
    open = watcher_->next(events, std::chrono::milliseconds(0));
    for (const auto& e : events) apply(e);
    if (applied != nullptr) *applied += events.size();
  }
  return open;
}

void GarbageCollector::apply(const Event& e) {
  if (e.type == Event::Type::kDeleted) {
    erase(e.key, e.rv);
  } else if (e.object) {
    upsert(e.key, e.rv, *e.object);
  }
}

void GarbageCollector::upsert(const std::string& key, int64_t rv, const std::string& json) {
  auto known = uidOfKey_.find(key);
  if (known != uidOfKey_.end()) {
    auto it = nodes_.find(known->second);
    if (it != nodes_.end() && it->second.rv >= rv) return;  // the list already had this one
  }
  auto d = parseMetadata(json);
  if (!d) return;
  std::string uid = kube::uid(*d);
  if (uid.empty()) return;
  if (known != uidOfKey_.end() && known->second != uid) erase(key, rv);  // replaced under the same name

  size_t slash = key.find('/');
  size_t slash2 = key.find('/', slash + 1);
  std::string group = key.substr(0, slash);
  if (group == "core") group.clear();

  Node n;
  n.key = key;
  n.rt = registry_.findAnyVersion(group, key.substr(slash + 1, slash2 - slash - 1));
  n.ns = kube::ns(*d);
  n.name = kube::name(*d);
  n.rv = rv;
  n.isNamespace = group.empty() && n.rt && n.rt->kind == "Namespace";
  const JsonValue& md = (*d)["metadata"];
  n.deleting = md.HasMember("deletionTimestamp");
  if (const JsonValue* refs = kube::find(md, {"ownerReferences"}); refs && refs->IsArray()) {
    for (const auto& r : refs->GetArray()) n.owners.push_back(kube::getString(r, {"uid"}));
  }
  if (const JsonValue* fs = kube::find(md, {"finalizers"}); fs && fs->IsArray()) {
    for (const auto& f : fs->GetArray()) {
      n.orphan |= kube::view(f) == "orphan";
      n.foreground |= kube::view(f) == "foregroundDeletion";
    }
  }

  auto it = nodes_.find(uid);
  if (it != nodes_.end()) unlink(uid, it->second);
  for (const auto& o : n.owners) dependents_[o].insert(uid);
  if (!n.ns.empty()) {
    members_[n.ns].insert(uid);
    if (deletingNamespace(n.ns) != nullptr) dirtyNamespaces_.insert(n.ns);
  }
  if (!n.owners.empty() || n.deleting) dirty_.insert(uid);
  if (n.isNamespace && n.deleting) dirtyNamespaces_.insert(n.name);
  uidOfKey_[key] = uid;
  nodes_[uid] = std::move(n);
}

void GarbageCollector::erase(const std::string& key, int64_t rv) {
  auto known = uidOfKey_.find(key);
  if (known == uidOfKey_.end()) return;
  std::string uid = known->second;
  auto it = nodes_.find(uid);
  if (it == nodes_.end() || it->second.rv >= rv) return;
  Node n = std::move(it->second);
  unlink(uid, n);
  nodes_.erase(it);
  uidOfKey_.erase(known);
  // Its dependents may have lost their last owner.
  if (auto deps = dependents_.find(uid); deps != dependents_.end()) {
    dirty_.insert(deps->second.begin(), deps->second.end());
  }
  if (!n.ns.empty() && deletingNamespace(n.ns) != nullptr) dirtyNamespaces_.insert(n.ns);
}

// A namespace being deleted must re-check its contents whenever one of them changes or goes.
const GarbageCollector::Node* GarbageCollector::deletingNamespace(const std::string& name) const {
  auto nsUid = uidOfKey_.find("core/namespaces//" + name);
  if (nsUid == uidOfKey_.end()) return nullptr;
  auto it = nodes_.find(nsUid->second);
  return it != nodes_.end() && it->second.deleting ? &it->second : nullptr;
}

// Removes a node's edges (not the node): from its owners' dependent sets, and from its
// namespace. Owners waiting in foreground deletion for their dependents to go are made dirty.
void GarbageCollector::unlink(const std::string& uid, const Node& n) {
  for (const auto& o : n.owners) {
    auto deps = dependents_.find(o);
    if (deps == dependents_.end()) continue;
    deps->second.erase(uid);
    if (deps->second.empty()) dependents_.erase(deps);
    if (auto owner = nodes_.find(o); owner != nodes_.end() && owner->second.deleting) dirty_.insert(o);
  }
  if (!n.ns.empty()) {
    if (auto m = members_.find(n.ns); m != members_.end()) {
      m->second.erase(uid);
      if (m->second.empty()) members_.erase(m);
    }
  }
}

size_t GarbageCollector::processDirty() {
  size_t writes = 0;
  while (!dirty_.empty() || !dirtyNamespaces_.empty()) {
    std::set<std::string> batch;
    batch.swap(dirty_);
    for (const auto& uid : batch) writes += processObject(uid);
    std::set<std::string> names;
    names.swap(dirtyNamespaces_);
    for (const auto& name : names) writes += processNamespace(name);
    // The writes above come back as events; take those that are already queued, so a cascade
    // runs to its end here (pass() relies on it; the thread would get them next round anyway).
    if (!drain(0)) break;
    if (stopping_) break;
  }
  return writes;
}

namespace {

// NotFound and Conflict mean someone else got there first: the resulting event (or its
// absence) decides what happens next. Anything else is worth a retry.
bool retryable(const kube::Status& st) { return !st.isOk() && st.code() != 404 && st.code() != 409; }

}  // namespace

void GarbageCollector::Tally::count(const kube::Status& st) {
  if (st.isOk()) ++writes;
  failed |= retryable(st);
}

void GarbageCollector::deleteEach(const std::unordered_set<std::string>& uids, const char* policy, Tally& tally) {
  DeleteOptions options;
  options.propagationPolicy = policy;
  std::vector<std::string> copy(uids.begin(), uids.end());
  for (const auto& uid : copy) {
    auto it = nodes_.find(uid);
    if (it == nodes_.end() || !it->second.rt || it->second.deleting) continue;
    options.preconditionUid = uid;
    tally.count(api_.remove(it->second.rt, it->second.ns, it->second.name, options).status());
  }
}

size_t GarbageCollector::processObject(const std::string& uid) {
  auto it = nodes_.find(uid);
  if (it == nodes_.end() || !it->second.rt) return 0;
  const Node& n = it->second;
  Tally tally;

  if (!n.deleting) {
    // A dependent whose owners are all gone follows them.
    if (n.owners.empty()) return 0;
    bool anyAlive = false;
    for (const auto& o : n.owners) anyAlive |= nodes_.count(o) > 0;
    if (!anyAlive) {
      DeleteOptions background;
      background.propagationPolicy = "Background";
      background.preconditionUid = uid;  // not a namesake created since
      tally.count(api_.remove(n.rt, n.ns, n.name, background).status());
    }
  } else if (n.orphan) {
    // Orphan: the dependents lose their reference to this owner, then the finalizer goes.
    std::vector<std::string> deps;
    if (auto d = dependents_.find(uid); d != dependents_.end()) deps.assign(d->second.begin(), d->second.end());
    for (const auto& depUid : deps) {
      auto dep = nodes_.find(depUid);
      if (dep == nodes_.end() || !dep->second.rt) continue;
      tally.count(api_.modify(dep->second.rt, dep->second.ns, dep->second.name, [&](Json& x) {
                  JsonValue* refs = kube::find(x, {"metadata", "ownerReferences"});
                  if (refs != nullptr && refs->IsArray()) {
                    for (auto r = refs->Begin(); r != refs->End();) {
                      r = kube::getString(*r, {"uid"}) == uid ? refs->Erase(r) : r + 1;
                    }
                  }
                  return kube::Status::ok();
                }).status());
    }
    if (!tally.failed) {
      tally.count(api_.modify(n.rt, n.ns, n.name, [](Json& x) {
                  removeFinalizer(x, "orphan");
                  return kube::Status::ok();
                }).status());
    }
  } else if (n.foreground) {
    // Foreground: the dependents are deleted (in the foreground too) first; the owner's
    // finalizer goes once the last of them is gone.
    auto d = dependents_.find(uid);
    if (d != dependents_.end() && !d->second.empty()) {
      deleteEach(d->second, "Foreground", tally);
    } else {
      tally.count(api_.modify(n.rt, n.ns, n.name, [](Json& x) {
                  removeFinalizer(x, "foregroundDeletion");
                  return kube::Status::ok();
                }).status());
    }
  }
  if (tally.failed) retry_.insert(uid);
  return tally.writes;
}

size_t GarbageCollector::processNamespace(const std::string& name) {
  const Node* ns = deletingNamespace(name);
  if (ns == nullptr || !ns->rt) return 0;
  const auto nsType = ns->rt;
  Tally tally;
  auto m = members_.find(name);
  if (m != members_.end() && !m->second.empty()) {
    // Terminating: delete the contents; the namespace is finalized once they are all gone.
    deleteEach(m->second, "Background", tally);
  } else {
    tally.count(api_.modify(nsType, "", name, [](Json& x) {
      JsonValue* f = kube::find(x, {"spec", "finalizers"});
      if (f != nullptr && f->IsArray()) f->Clear();
      return kube::Status::ok();
    }, "finalize").status());
  }
  if (tally.failed) retryNamespaces_.insert(name);
  return tally.writes;
}

}  // namespace apiserver
