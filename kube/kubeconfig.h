#pragma once
// Where and how to reach an API server: a RestConfig, loaded from a kubeconfig file, from the
// in-cluster service account, or rendered back into kubeconfig YAML (for the admin and worker
// kubeconfigs `foxden server` writes).
//
// Threading: free functions without shared state; RestConfig is a plain value.

#include <string>
#include <string_view>

#include "kube/status.h"

namespace kube {

struct RestConfig {
  std::string server;         // "https://10.0.0.1:6443" (no trailing slash)
  std::string caPem;          // trusted CA bundle, PEM; empty: system roots
  std::string clientCertPem;  // client certificate chain, PEM (mTLS)
  std::string clientKeyPem;   // its private key, PEM
  std::string bearerToken;    // sent as "Authorization: Bearer <token>" when non-empty
  bool insecureSkipTlsVerify = false;
  std::string ns = "default";  // the context's namespace (or the service account's)
};

// Loads `path`. `context` selects a context by name; empty means `current-context`. Relative
// file references (certificate-authority, client-certificate, client-key, tokenFile) resolve
// against the kubeconfig's directory. Errors name the file and the missing or bad entry.
[[nodiscard]] StatusOr<RestConfig> loadKubeconfig(const std::string& path, std::string_view context = "");
// Same, from YAML text; `baseDir` resolves relative file references.
[[nodiscard]] StatusOr<RestConfig> parseKubeconfig(std::string_view yaml, const std::string& baseDir,
                                                   std::string_view context = "");

// In-cluster configuration: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT and the service
// account files <rootDir>/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}.
// `rootDir` is "" in production; tests point it at a temporary tree.
[[nodiscard]] StatusOr<RestConfig> loadInClusterConfig(const std::string& rootDir = "");

// Renders a self-contained kubeconfig (all credentials inlined as *-data / token) with one
// cluster, one user and one context "<userName>@<clusterName>" that is current.
std::string renderKubeconfig(const RestConfig& config, std::string_view userName,
                             std::string_view clusterName);

// Standard base64 (RFC 4648) as used by kubeconfig *-data fields; decode skips whitespace.
std::string base64Encode(std::string_view data);
[[nodiscard]] StatusOr<std::string> base64Decode(std::string_view text);

}  // namespace kube
