#pragma once
// The Kubernetes API surface of `foxden server`: routing, authentication and authorisation,
// the verbs (get, list, watch, create, update, patch, delete, deletecollection) with Kubernetes'
// metadata rules, discovery, OpenAPI and Table output.
//
// Threads: handle() runs on the HTTP server's connection threads, any number at once; a watch
// holds its connection's thread until it ends. Writes are serialised inside Storage::mutate. The
// garbage collector (gc.h) calls the internal create/update/delete entry points from its thread.

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "apiserver/auth.h"
#include "apiserver/metrics.h"
#include "apiserver/request.h"
#include "apiserver/resources.h"
#include "apiserver/storage.h"
#include "kube/http_server.h"
#include "kube/json.h"

namespace apiserver {

struct ApiOptions {
  std::string version = "v1.32.0";        // what /version reports (kubectl's dispatcher reads it)
  int bookmarkIntervalSeconds = 10;       // watch heartbeats for clients that allow bookmarks
  std::string externalAddress;            // host:port for discovery's serverAddressByClientCIDRs
};

struct DeleteOptions {
  std::string propagationPolicy;  // Background (default) | Foreground | Orphan
  std::string preconditionUid;
  std::string preconditionRv;
  bool dryRun = false;
};

class Api {
 public:
  Api(Storage& storage, Registry& registry, Authenticator& auth, ApiOptions options);

  // Serves one request; counts it in apiserver_request_total (and its duration), and serves
  // those metrics on /metrics to the admin.
  void handle(const kube::ServerRequest& req, kube::ResponseWriter& w);

  // Internal entry points (trusted callers: bootstrap, GC). Same rules as the HTTP verbs.
  kube::StatusOr<Entry> create(const ResourceTypePtr& rt, const std::string& ns, kube::Json obj,
                               const std::string& fieldManager = "foxden-server");
  // Applies `edit` to the current object and stores the result through the update rules.
  kube::StatusOr<Entry> modify(const ResourceTypePtr& rt, const std::string& ns,
                               const std::string& name,
                               const std::function<kube::Status(kube::Json&)>& edit,
                               const std::string& subresource = "");
  kube::StatusOr<Entry> remove(const ResourceTypePtr& rt, const std::string& ns,
                               const std::string& name, const DeleteOptions& opts);

 private:
  void serve(const kube::ServerRequest& req, kube::ResponseWriter& w, RequestInfo& ri);
  RequestMetrics metrics_;
  struct Call;  // one request's parsed state
  void serveResource(Call& c);
  void serveGet(Call& c);
  void serveList(Call& c);
  void serveWatch(Call& c);
  void serveCreate(Call& c);
  void serveUpdate(Call& c);
  void servePatch(Call& c);
  void serveDelete(Call& c);
  void serveDeleteCollection(Call& c);
  void serveScale(Call& c);
  void serveTokenReview(Call& c);

  kube::StatusOr<Entry> writeUpdate(const ResourceTypePtr& rt, const std::string& ns,
                                    const std::string& name, const std::string& subresource,
                                    const std::string& fieldManager, const std::string& validation,
                                    bool dryRun, bool createIfMissing,
                                    const std::function<kube::StatusOr<kube::Json>(
                                        const kube::Json* current)>& produce,
                                    bool* created = nullptr);
  kube::Status prepareCreate(const ResourceTypePtr& rt, const std::string& ns, kube::Json& obj,
                             int64_t rv, const std::string& fieldManager,
                             const std::string& validation, bool isApply);
  kube::Status prepareUpdate(const ResourceTypePtr& rt, kube::Json& obj, const kube::Json& old,
                             int64_t rv, const std::string& subresource,
                             const std::string& fieldManager, const std::string& validation,
                             bool isApply);
  kube::Status admitCommon(const ResourceTypePtr& rt, kube::Json& obj, const std::string& validation);
  void afterWrite(const ResourceTypePtr& rt, const Entry& e, bool deleted);
  kube::Status namespaceAcceptsCreates(const ResourceTypePtr& rt, const std::string& ns);

  Storage& storage_;
  Registry& registry_;
  Authenticator& auth_;
  const ApiOptions options_;
};

// Rendering helpers shared with discovery/printers.
std::string statusJson(const kube::Status& st, const std::string& name = "",
                       const std::string& group = "", const std::string& kind = "");
std::string qualifiedResource(const ResourceType& rt);  // "configmaps", "jobs.foxden.io"
std::string qualifiedKind(const ResourceType& rt);      // "ConfigMap", "Job.foxden.io"

}  // namespace apiserver
