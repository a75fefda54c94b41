#pragma once
// A worker's heartbeat Lease, as the kubelet keeps its node Lease: a coordination.k8s.io/v1 Lease
// named after the worker in `ns`, held by the worker, renewed by a merge patch of renewTime (no
// read first, no resourceVersion: only its owner writes it) and created when it does not exist.
//
// Thread safety: as RestClient.

#include <string>

#include "kube/rest_client.h"

namespace kube {

[[nodiscard]] Status renewNodeLease(RestClient& client, const std::string& ns, const std::string& name,
                                    int leaseDurationSeconds);

}  // namespace kube
