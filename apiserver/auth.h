#pragma once
// Authentication by bearer tokens and authorisation by identity.
//
// Identities: the admin (token generated on first start, kept in DATA/admin.token, mode 0600) may
// do anything. A worker identity ("system:foxden-worker:NAME", token stored as a Secret
// `worker-token-NAME` of type foxden.io/worker-token in foxden-system, as Kubernetes stores
// bootstrap tokens) may read what an agent needs and write only its own Worker, its own Lease in
// foxden-system, Events, and the status of Allocations bound to it: the kubelet's NodeRestriction
// rule. Everything else is 403, also for names that do not exist.
//
// Thread safety: safe from any thread; tokens are looked up in Storage on each request (a
// std::map lookup), so revoking a worker token is deleting its Secret.

#include <optional>
#include <string>
#include <vector>

#include "apiserver/request.h"
#include "apiserver/storage.h"
#include "kube/status.h"

namespace apiserver {

struct Identity {
  std::string user;
  bool admin = false;
  std::string worker;  // set for worker identities

  // As a TokenReview reports them: the admin is in system:masters (Kubernetes' cluster-admin
  // group), workers in system:foxden-workers; everyone authenticated in system:authenticated.
  std::vector<std::string> groups() const;
};

class Authenticator {
 public:
  Authenticator(Storage& storage, std::string adminToken)
      : storage_(storage), adminToken_(std::move(adminToken)) {}

  // From the Authorization header; nullopt when missing or unknown (401).
  std::optional<Identity> authenticate(const std::string& authorizationHeader) const;
  // 403 with Kubernetes' message when `id` may not do `ri`.
  [[nodiscard]] kube::Status authorize(const Identity& id, const RequestInfo& ri) const;

  static std::string workerTokenSecretName(const std::string& worker) {
    return "worker-token-" + worker;
  }

 private:
  Storage& storage_;
  const std::string adminToken_;
};

}  // namespace apiserver
