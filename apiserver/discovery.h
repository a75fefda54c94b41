#pragma once
// Discovery (/api, /apis, per group-version resource lists: the legacy form, which every kubectl
// minor falls back to), /version, OpenAPI v3 (enough for `kubectl apply` validation and
// `kubectl explain`), continue tokens, and serving an object in the version a client asked for.

#include <string>
#include <utility>

#include "apiserver/resources.h"
#include "kube/status.h"

namespace apiserver {

struct ApiOptions;

std::string versionJson(const std::string& gitVersion);
// Serves a non-resource GET path; 404 Status for unknown paths.
kube::StatusOr<std::string> serveDiscovery(const Registry& registry, const std::string& path,
                                           const std::string& accept, const ApiOptions& options,
                                           std::string& contentType);
// The stored text with apiVersion rewritten when the request's version differs.
std::string renderForVersion(const std::string& stored, const ResourceType& rt);
std::string encodeContinue(int64_t rv, const std::string& lastKey);
kube::StatusOr<std::pair<int64_t, std::string>> decodeContinue(const std::string& token);

}  // namespace apiserver
