#include "apiserver/gc.h"

#include <map>
#include <set>

namespace apiserver {

using kube::Json;
using kube::JsonValue;

void GarbageCollector::start() { thread_ = std::thread([this] { run(); }); }

void GarbageCollector::stop() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GarbageCollector::poke() {
  {
    std::lock_guard l(mu_);
    poked_ = true;
  }
  cv_.notify_all();
}

void GarbageCollector::run() {
  for (;;) {
    {
      std::unique_lock l(mu_);
      cv_.wait_for(l, std::chrono::seconds(5), [this] { return poked_ || stopping_; });
      if (stopping_) return;
      // Let a burst of deletions land before walking the store once for all of them.
      cv_.wait_for(l, std::chrono::milliseconds(20), [this] { return stopping_; });
      if (stopping_) return;
      poked_ = false;
    }
    try {
      // Repeat while passes make progress (a cascade is several passes), bounded per wake-up.
      for (int i = 0; i < 20 && pass() > 0; ++i) {
      }
    } catch (const std::exception&) {
      // A failing pass is retried on the next wake-up; the store is untouched by a failed write.
    }
  }
}

namespace {

struct Obj {
  std::string key;
  ResourceTypePtr rt;
  Json doc;
};

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

}  // namespace

size_t GarbageCollector::pass() {
  auto all = storage_.list("");
  bool anyOwners = false;
  bool anyDeleting = false;
  for (const auto& [key, e] : all) {
    anyOwners |= e.json->find("\"ownerReferences\"") != std::string::npos;
    anyDeleting |= e.json->find("\"deletionTimestamp\"") != std::string::npos;
  }
  if (!anyOwners && !anyDeleting) return 0;

  std::vector<Obj> objs;
  std::set<std::string> uids;
  std::map<std::string, std::vector<size_t>> dependents;  // owner uid -> indexes
  for (const auto& [key, e] : all) {
    auto d = kube::parseJson(*e.json);
    if (!d) continue;
    size_t slash = key.find('/');
    size_t slash2 = key.find('/', slash + 1);
    std::string group = key.substr(0, slash);
    if (group == "core") group.clear();
    ResourceTypePtr rt = registry_.findAnyVersion(group, key.substr(slash + 1, slash2 - slash - 1));
    if (!rt) continue;
    uids.insert(kube::uid(*d));
    if (const JsonValue* refs = kube::find(*d, {"metadata", "ownerReferences"}); refs && refs->IsArray()) {
      for (const auto& r : refs->GetArray()) dependents[kube::getString(r, {"uid"})].push_back(objs.size());
    }
    objs.push_back({key, rt, std::move(*d)});
  }
  size_t writes = 0;
  DeleteOptions background;
  background.propagationPolicy = "Background";
  for (auto& o : objs) {
    const JsonValue& md = o.doc["metadata"];
    std::string ns = kube::ns(o.doc), name = kube::name(o.doc), uid = kube::uid(o.doc);
    bool deleting = md.HasMember("deletionTimestamp");
    // Dependents whose owners are all gone follow them.
    if (const JsonValue* refs = kube::find(md, {"ownerReferences"}); refs && refs->IsArray() && !refs->Empty() && !deleting) {
      bool anyAlive = false;
      for (const auto& r : refs->GetArray()) anyAlive |= uids.count(kube::getString(r, {"uid"})) > 0;
      if (!anyAlive) {
        if (api_.remove(o.rt, ns, name, background)) ++writes;
        continue;
      }
    }
    if (!deleting) continue;
    auto deps = dependents.find(uid);
    bool hasDeps = deps != dependents.end() && !deps->second.empty();
    auto hasF = [&](std::string_view f) {
      const JsonValue* fs = kube::find(md, {"finalizers"});
      if (fs == nullptr || !fs->IsArray()) return false;
      for (const auto& v : fs->GetArray()) {
        if (kube::view(v) == f) return true;
      }
      return false;
    };
    if (hasF("orphan")) {
      if (hasDeps) {
        for (size_t i : deps->second) {
          auto& d = objs[i];
          (void)api_.modify(d.rt, kube::ns(d.doc), kube::name(d.doc), [&](Json& x) {
            JsonValue* refs = kube::find(x, {"metadata", "ownerReferences"});
            if (refs != nullptr && refs->IsArray()) {
              for (auto it = refs->Begin(); it != refs->End();) {
                it = kube::getString(*it, {"uid"}) == uid ? refs->Erase(it) : it + 1;
              }
            }
            return kube::Status::ok();
          });
          ++writes;
        }
      }
      if (api_.modify(o.rt, ns, name, [](Json& x) { removeFinalizer(x, "orphan"); return kube::Status::ok(); })) ++writes;
      continue;
    }
    if (hasF("foregroundDeletion")) {
      if (hasDeps) {
        DeleteOptions fg;
        fg.propagationPolicy = "Foreground";
        for (size_t i : deps->second) {
          auto& d = objs[i];
          if (!kube::find(d.doc, {"metadata", "deletionTimestamp"})) {
            if (api_.remove(d.rt, kube::ns(d.doc), kube::name(d.doc), fg)) ++writes;
          }
        }
      } else if (api_.modify(o.rt, ns, name, [](Json& x) { removeFinalizer(x, "foregroundDeletion"); return kube::Status::ok(); })) {
        ++writes;
      }
      continue;
    }
    if (o.rt->kind == "Namespace" && o.rt->group.empty()) {
      // Namespace termination: delete the contents, finalize once empty.
      bool empty = true;
      for (auto& other : objs) {
        if (!other.rt->namespaced || kube::ns(other.doc) != name) continue;
        empty = false;
        if (!kube::find(other.doc, {"metadata", "deletionTimestamp"})) {
          if (api_.remove(other.rt, name, kube::name(other.doc), background)) ++writes;
        }
      }
      if (empty) {
        auto r = api_.modify(o.rt, "", name, [](Json& x) {
          JsonValue* f = kube::find(x, {"spec", "finalizers"});
          if (f != nullptr && f->IsArray()) f->Clear();
          return kube::Status::ok();
        }, "finalize");
        if (r) ++writes;
      }
    }
  }
  return writes;
}

}  // namespace apiserver
