#include "apiserver/resources.h"

#include <algorithm>
#include <mutex>

namespace apiserver {

namespace {

ResourceTypePtr builtin(std::string group, std::string version, std::string resource,
                        std::string singular, std::string kind, bool namespaced,
                        std::vector<std::string> shortNames, bool status = false) {
  auto rt = std::make_shared<ResourceType>();
  rt->group = std::move(group);
  rt->version = std::move(version);
  rt->resource = std::move(resource);
  rt->singular = std::move(singular);
  rt->kind = std::move(kind);
  rt->listKind = rt->kind + "List";
  rt->namespaced = namespaced;
  rt->shortNames = std::move(shortNames);
  rt->statusSubresource = status;
  return rt;
}

std::vector<std::string> stringList(const kube::JsonValue* v) {
  std::vector<std::string> out;
  if (v == nullptr || !v->IsArray()) return out;
  for (const auto& s : v->GetArray()) {
    if (s.IsString()) out.emplace_back(s.GetString(), s.GetStringLength());
  }
  return out;
}

}  // namespace

Registry::Registry() {
  std::unique_lock l(mu_);
  addLocked(builtin("", "v1", "namespaces", "namespace", "Namespace", false, {"ns"}, true));
  addLocked(builtin("", "v1", "configmaps", "configmap", "ConfigMap", true, {"cm"}));
  addLocked(builtin("", "v1", "secrets", "secret", "Secret", true, {}));
  addLocked(builtin("", "v1", "services", "service", "Service", true, {"svc"}, true));
  addLocked(builtin("", "v1", "events", "event", "Event", true, {"ev"}));
  addLocked(builtin("coordination.k8s.io", "v1", "leases", "lease", "Lease", true, {}));
  addLocked(builtin("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice",
                    true, {}));
  auto crd = builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                     "customresourcedefinition", "CustomResourceDefinition", false,
                     {"crd", "crds"}, true);
  std::const_pointer_cast<ResourceType>(crd)->categories = {"api-extensions"};
  std::const_pointer_cast<ResourceType>(crd)->hasGeneration = true;
  addLocked(crd);
  // Create-only and never stored: answers whether a bearer token is valid and whose it is (the
  // agent's log endpoint authenticates API tokens with it, as the kubelet does).
  auto tokenReview = builtin("authentication.k8s.io", "v1", "tokenreviews", "tokenreview", "TokenReview", false, {});
  std::const_pointer_cast<ResourceType>(tokenReview)->verbs = {"create"};
  addLocked(tokenReview);
}

void Registry::addLocked(ResourceTypePtr rt) {
  types_.push_back(std::move(rt));
  ++generation_;
}

kube::Status Registry::validateCrd(const kube::JsonValue& crd) {
  auto bad = [](const std::string& m) { return kube::Status::invalid(m); };
  std::string group = kube::getString(crd, {"spec", "group"});
  std::string plural = kube::getString(crd, {"spec", "names", "plural"});
  std::string kind = kube::getString(crd, {"spec", "names", "kind"});
  std::string scope = kube::getString(crd, {"spec", "scope"});
  std::string name = kube::name(crd);
  if (group.empty()) return bad("spec.group: Required value");
  if (plural.empty()) return bad("spec.names.plural: Required value");
  if (kind.empty()) return bad("spec.names.kind: Required value");
  if (scope != "Namespaced" && scope != "Cluster") {
    return bad("spec.scope: Unsupported value: \"" + scope +
               "\": supported values: \"Cluster\", \"Namespaced\"");
  }
  if (name != plural + "." + group) {
    return bad("metadata.name: Invalid value: \"" + name + "\": must be spec.names.plural+\".\"+spec.group");
  }
  const kube::JsonValue* versions = kube::find(crd, {"spec", "versions"});
  if (versions == nullptr || !versions->IsArray() || versions->Empty()) {
    return bad("spec.versions: Invalid value: must have exactly one version marked as storage version");
  }
  int storage = 0;
  for (const auto& v : versions->GetArray()) {
    if (!v.IsObject() || kube::getString(v, {"name"}).empty()) {
      return bad("spec.versions[].name: Required value");
    }
    if (kube::getBool(v, {"storage"})) ++storage;
    const kube::JsonValue* schema = kube::find(v, {"schema", "openAPIV3Schema"});
    if (schema != nullptr && !schema->IsObject()) {
      return bad("spec.versions[].schema.openAPIV3Schema: Invalid value: must be an object");
    }
  }
  if (storage != 1) {
    return bad("spec.versions: Invalid value: must have exactly one version marked as storage version");
  }
  return kube::Status::ok();
}

kube::Status Registry::addCrd(const kube::JsonValue& crd) {
  kube::Status st = validateCrd(crd);
  if (!st) return st;
  std::string group = kube::getString(crd, {"spec", "group"});
  const kube::JsonValue& names = *kube::find(crd, {"spec", "names"});
  std::vector<ResourceTypePtr> added;
  for (const auto& v : kube::find(crd, {"spec", "versions"})->GetArray()) {
    if (!kube::getBool(v, {"served"}, true)) continue;
    auto rt = std::make_shared<ResourceType>();
    rt->group = group;
    rt->version = kube::getString(v, {"name"});
    rt->resource = kube::getString(names, {"plural"});
    rt->kind = kube::getString(names, {"kind"});
    rt->singular = kube::getString(names, {"singular"});
    if (rt->singular.empty()) {
      rt->singular = rt->kind;
      for (auto& c : rt->singular) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    rt->listKind = kube::getString(names, {"listKind"}, rt->kind + "List");
    rt->namespaced = kube::getString(crd, {"spec", "scope"}) == "Namespaced";
    rt->shortNames = stringList(kube::find(names, {"shortNames"}));
    rt->categories = stringList(kube::find(names, {"categories"}));
    rt->builtin = false;
    rt->hasGeneration = true;
    rt->storageVersion = kube::getBool(v, {"storage"});
    if (const auto* sub = kube::find(v, {"subresources"}); sub != nullptr && sub->IsObject()) {
      rt->statusSubresource = sub->HasMember("status");
      if (const auto* scale = kube::find(*sub, {"scale"}); scale != nullptr && scale->IsObject()) {
        rt->scaleSubresource = true;
        rt->specReplicasPath = kube::getString(*scale, {"specReplicasPath"});
        rt->statusReplicasPath = kube::getString(*scale, {"statusReplicasPath"});
        rt->labelSelectorPath = kube::getString(*scale, {"labelSelectorPath"});
      }
    }
    if (const auto* cols = kube::find(v, {"additionalPrinterColumns"}); cols && cols->IsArray()) {
      for (const auto& c : cols->GetArray()) {
        PrinterColumn pc;
        pc.name = kube::getString(c, {"name"});
        pc.type = kube::getString(c, {"type"}, "string");
        pc.format = kube::getString(c, {"format"});
        pc.description = kube::getString(c, {"description"});
        pc.jsonPath = kube::getString(c, {"jsonPath"});
        pc.priority = static_cast<int>(kube::getInt(c, {"priority"}).value_or(0));
        rt->columns.push_back(std::move(pc));
      }
    }
    if (const auto* schema = kube::find(v, {"schema", "openAPIV3Schema"}); schema != nullptr) {
      rt->schema = kube::shareJson(kube::cloneJson(*schema));
    }
    added.push_back(std::move(rt));
  }
  std::unique_lock l(mu_);
  std::string crdName = kube::name(crd);
  auto old = crdGroupRes_.find(crdName);
  std::string gr = group + "/" + kube::getString(names, {"plural"});
  if (old != crdGroupRes_.end()) gr = old->second;
  std::erase_if(types_, [&](const ResourceTypePtr& t) {
    return !t->builtin && t->group + "/" + t->resource == gr;
  });
  for (auto& rt : added) types_.push_back(std::move(rt));
  crdGroupRes_[crdName] = group + "/" + kube::getString(names, {"plural"});
  ++generation_;
  return kube::Status::ok();
}

void Registry::removeCrd(const std::string& crdName) {
  std::unique_lock l(mu_);
  auto it = crdGroupRes_.find(crdName);
  if (it == crdGroupRes_.end()) return;
  std::string gr = it->second;
  std::erase_if(types_, [&](const ResourceTypePtr& t) {
    return !t->builtin && t->group + "/" + t->resource == gr;
  });
  crdGroupRes_.erase(it);
  ++generation_;
}

ResourceTypePtr Registry::find(const std::string& group, const std::string& version,
                               const std::string& resource) const {
  std::shared_lock l(mu_);
  for (const auto& t : types_) {
    if (t->group == group && t->version == version && t->resource == resource) return t;
  }
  return nullptr;
}

ResourceTypePtr Registry::findKind(const std::string& group, const std::string& version,
                                   const std::string& kind) const {
  std::shared_lock l(mu_);
  for (const auto& t : types_) {
    if (t->group == group && t->version == version && t->kind == kind) return t;
  }
  return nullptr;
}

ResourceTypePtr Registry::findAnyVersion(const std::string& group,
                                         const std::string& resource) const {
  std::shared_lock l(mu_);
  ResourceTypePtr any;
  for (const auto& t : types_) {
    if (t->group == group && t->resource == resource) {
      if (t->storageVersion) return t;
      if (!any) any = t;
    }
  }
  return any;
}

std::vector<ResourceTypePtr> Registry::all() const {
  std::shared_lock l(mu_);
  return types_;
}

std::map<std::string, std::vector<std::string>> Registry::groups() const {
  std::shared_lock l(mu_);
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& t : types_) {
    auto& vs = out[t->group];
    if (std::find(vs.begin(), vs.end(), t->version) == vs.end()) {
      if (t->storageVersion) {
        vs.insert(vs.begin(), t->version);
      } else {
        vs.push_back(t->version);
      }
    }
  }
  return out;
}

uint64_t Registry::generation() const {
  std::shared_lock l(mu_);
  return generation_;
}

}  // namespace apiserver
