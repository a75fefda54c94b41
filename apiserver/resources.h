#pragma once
// The resource registry: every kind `foxden server` serves, built-in or defined by a
// CustomResourceDefinition at runtime. Lookups hand out immutable shared descriptors.
//
// Thread safety: Registry is safe to use from any thread (shared_mutex; readers never block each
// other). Descriptors are immutable once published.

#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "kube/json.h"

namespace apiserver {

struct PrinterColumn {
  std::string name;
  std::string type;  // integer | number | string | boolean | date
  std::string format;
  std::string description;
  std::string jsonPath;
  int priority = 0;
};

struct ResourceType {
  std::string group;     // "" for the core group
  std::string version;
  std::string resource;  // plural, lower case
  std::string singular;
  std::string kind;
  std::string listKind;
  bool namespaced = true;
  std::vector<std::string> shortNames;
  std::vector<std::string> categories;
  bool statusSubresource = false;
  bool scaleSubresource = false;
  std::string specReplicasPath;    // scale subresource, e.g. ".spec.replicas"
  std::string statusReplicasPath;
  std::string labelSelectorPath;
  std::vector<PrinterColumn> columns;  // CRD additionalPrinterColumns
  kube::JsonPtr schema;                // openAPIV3Schema (CRDs only)
  bool builtin = true;
  bool storageVersion = true;
  bool hasGeneration = false;  // metadata.generation is maintained (CRs, CRDs)
  // Verbs served when not the usual set (e.g. TokenReview: create only, nothing is stored).
  std::vector<std::string> verbs;

  std::string groupVersion() const { return group.empty() ? version : group + "/" + version; }
  // Storage key prefix shared by all versions of the resource: "<group|core>/<resource>/".
  std::string keyPrefix() const { return (group.empty() ? "core" : group) + "/" + resource + "/"; }
  std::string key(const std::string& ns, const std::string& name) const {
    return keyPrefix() + ns + "/" + name;
  }
};
using ResourceTypePtr = std::shared_ptr<const ResourceType>;

class Registry {
 public:
  Registry();

  // Registers (or replaces) the versions of a CRD. Returns 422 for an unusable definition.
  [[nodiscard]] kube::Status addCrd(const kube::JsonValue& crd);
  void removeCrd(const std::string& crdName);
  // Validates a CRD object without registering it.
  [[nodiscard]] static kube::Status validateCrd(const kube::JsonValue& crd);

  ResourceTypePtr find(const std::string& group, const std::string& version,
                       const std::string& resource) const;
  ResourceTypePtr findKind(const std::string& group, const std::string& version,
                           const std::string& kind) const;
  // Any version of group/resource (first served), for cross-version storage concerns.
  ResourceTypePtr findAnyVersion(const std::string& group, const std::string& resource) const;
  std::vector<ResourceTypePtr> all() const;
  // group -> versions (preferred first)
  std::map<std::string, std::vector<std::string>> groups() const;
  uint64_t generation() const;  // bumps on every change, for discovery/openapi caching

 private:
  void addLocked(ResourceTypePtr rt);
  mutable std::shared_mutex mu_;
  std::vector<ResourceTypePtr> types_;              // guarded by mu_
  std::map<std::string, std::string> crdGroupRes_;  // crd name -> "group/resource", guarded by mu_
  uint64_t generation_ = 0;                         // guarded by mu_
};

}  // namespace apiserver
