#pragma once
// Decoding of Kubernetes' protobuf request bodies ("k8s\0" + runtime.Unknown) for the built-in
// kinds that kubectl's typed generators create: Namespace, ConfigMap and Secret
// (`kubectl create namespace|configmap|secret ...`). Other kinds are 415, as documented.
// Responses are always JSON, which every client accepts.

#include <string_view>

#include "kube/json.h"

namespace apiserver {

kube::StatusOr<kube::Json> decodeKubernetesProtobuf(std::string_view body);

}  // namespace apiserver
