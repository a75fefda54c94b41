#pragma once
// Label and field selectors of list, watch and deletecollection requests. Field selectors accept
// the fields Kubernetes supports for each kind (metadata.name and metadata.namespace everywhere;
// involvedObject.*, reason, type, source for Events; type for Secrets); others are 400, as there.

#include <string>

#include "apiserver/resources.h"
#include "kube/labels.h"

namespace apiserver {

class Selectors {
 public:
  static kube::StatusOr<Selectors> parse(const std::string& labelSelector,
                                         const std::string& fieldSelector, const ResourceType& rt);
  bool empty() const { return labels_.isEverything() && fields_.isEverything() && name_.empty(); }
  // Parses the stored object text and evaluates the selectors.
  bool matches(const std::string& objectJson) const;
  void addNameRequirement(const std::string& name) { name_ = name; }

 private:
  kube::Selector labels_;
  kube::FieldSelector fields_;
  std::string name_;
};

}  // namespace apiserver
