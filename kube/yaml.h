#pragma once
// YAML in, JSON out: manifests, kubeconfigs and CRD files are YAML; everything inside Foxden is
// JSON. Conversion follows Kubernetes' sigs.k8s.io/yaml: plain scalars that look like numbers,
// booleans or null become those JSON types; quoted scalars stay strings.

#include <string_view>
#include <vector>

#include "kube/json.h"

namespace kube {

StatusOr<Json> yamlToJson(std::string_view text);
// A multi-document stream ("---" separated); empty documents are skipped.
StatusOr<std::vector<Json>> yamlDocumentsToJson(std::string_view text);

}  // namespace kube
