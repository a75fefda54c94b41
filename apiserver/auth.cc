#include "apiserver/auth.h"

#include <openssl/crypto.h>

#include "kube/json.h"
#include "kube/kubeconfig.h"

namespace apiserver {

namespace {

bool constantTimeEqual(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

kube::Status forbid(const Identity& id, const RequestInfo& ri, const std::string& why) {
  std::string res = ri.resource + (ri.subresource.empty() ? "" : "/" + ri.subresource);
  std::string qualified = ri.resource + (ri.group.empty() ? "" : "." + ri.group);
  std::string msg = ri.name.empty() ? qualified + " is forbidden: "
                                    : qualified + " \"" + ri.name + "\" is forbidden: ";
  msg += "User \"" + id.user + "\" cannot " + ri.verb + " resource \"" + res + "\" in API group \"" +
         ri.group + "\"";
  msg += ri.ns.empty() ? " at the cluster scope" : " in the namespace \"" + ri.ns + "\"";
  if (!why.empty()) msg += ": " + why;
  return kube::Status::forbidden(msg);
}

}  // namespace

std::vector<std::string> Identity::groups() const {
  if (admin) return {"system:masters", "system:authenticated"};
  if (!worker.empty()) return {"system:foxden-workers", "system:authenticated"};
  return {"system:authenticated"};
}

std::optional<Identity> Authenticator::authenticate(const std::string& header) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0) {
    return std::nullopt;
  }
  std::string token = header.substr(kBearer.size());
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.pop_back();
  if (!adminToken_.empty() && constantTimeEqual(token, adminToken_)) {
    return Identity{"foxden-admin", true, ""};
  }
  // Worker tokens: "fxw.<worker>.<secret>"; the worker name may itself contain dots.
  if (token.rfind("fxw.", 0) != 0) return std::nullopt;
  size_t lastDot = token.rfind('.');
  if (lastDot <= 4) return std::nullopt;
  std::string worker = token.substr(4, lastDot - 4);
  auto e = storage_.get("core/secrets/foxden-system/" + workerTokenSecretName(worker));
  if (!e || !e->json) return std::nullopt;
  auto doc = kube::parseJson(*e->json);
  if (!doc) return std::nullopt;
  auto stored = kube::base64Decode(kube::getString(*doc, {"data", "token"}));
  if (!stored || !constantTimeEqual(*stored, token)) return std::nullopt;
  return Identity{"system:foxden-worker:" + worker, false, worker};
}

kube::Status Authenticator::authorize(const Identity& id, const RequestInfo& ri) const {
  if (id.admin) return kube::Status::ok();
  if (id.worker.empty()) return forbid(id, ri, "");
  const std::string& w = id.worker;
  bool read = ri.verb == "get" || ri.verb == "list" || ri.verb == "watch";
  bool write = ri.verb == "create" || ri.verb == "update" || ri.verb == "patch";
  auto boundToMe = [&](const std::string& ns, const std::string& name) {
    auto e = storage_.get("foxden.io/allocations/" + ns + "/" + name);
    if (!e || !e->json) return false;
    auto doc = kube::parseJson(*e->json);
    return doc && (kube::getString(*doc, {"spec", "workerName"}) == w ||
                   kube::getString(*doc, {"metadata", "labels", "foxden.io/worker"}) == w);
  };
  if (read) {
    if (ri.group.empty() && ri.resource == "secrets") {
      return forbid(id, ri, "workers may not read secrets");
    }
    if (ri.group == "foxden.io" && ri.resource == "allocations") {
      // A worker sees only its own Allocations: by name when bound to it, or as a collection
      // selected by its worker label (as the Node authorizer limits a kubelet to its pods).
      if (!ri.name.empty()) {
        if (boundToMe(ri.ns, ri.name)) return kube::Status::ok();
        return forbid(id, ri, "worker " + w + " may only read Allocations bound to it");
      }
      if (ri.labelSelector == "foxden.io/worker=" + w || ri.labelSelector == "foxden.io/worker==" + w) {
        return kube::Status::ok();
      }
      return forbid(id, ri, "worker " + w + " may only list Allocations with labelSelector foxden.io/worker=" + w);
    }
    return kube::Status::ok();
  }
  if (ri.group.empty() && ri.resource == "events" && ri.verb == "create") return kube::Status::ok();
  // An agent checks the tokens its log endpoint is shown (system:auth-delegator's right).
  if (ri.group == "authentication.k8s.io" && ri.resource == "tokenreviews" && ri.verb == "create") {
    return kube::Status::ok();
  }
  if (ri.group == "foxden.io" && ri.resource == "workers" && write) {
    if (ri.name == w) return kube::Status::ok();
    return forbid(id, ri, "worker " + w + " may only modify its own Worker");
  }
  if (ri.group == "coordination.k8s.io" && ri.resource == "leases" && write) {
    if (ri.ns == "foxden-system" && ri.name == w) return kube::Status::ok();
    return forbid(id, ri, "worker " + w + " may only modify its own Lease in foxden-system");
  }
  if (ri.group == "foxden.io" && ri.resource == "allocations" && write &&
      ri.subresource == "status" && !ri.name.empty()) {
    if (boundToMe(ri.ns, ri.name)) return kube::Status::ok();
    return forbid(id, ri, "worker " + w + " may only update the status of Allocations bound to it");
  }
  return forbid(id, ri, "");
}

}  // namespace apiserver
