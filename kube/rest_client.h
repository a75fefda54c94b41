#pragma once
// RestClient: typed Kubernetes REST verbs over an HttpClient. Objects stay RapidJSON documents.
// Resource addressing follows the API's URL layout:
//   /api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE]]          (core group "")
//   /apis/GROUP/VERSION[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE]]
// Every error response is decoded from the server's Status body into kube::Status (code, reason,
// message), so callers test e.g. `st.code() == 409 && st.reason() == "Conflict"`.
//
// Threading: all methods are const and thread-safe; they block the calling thread (never call
// them from a cpprest continuation).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kube/http_client.h"
#include "kube/json.h"

namespace kube {

struct ResourceRef {
  std::string group;       // "" for the core group
  std::string version;     // "v1"
  std::string resource;    // plural, lower case: "pods", "leases"
  std::string ns;          // "" for cluster-scoped resources or all namespaces
  std::string name;        // "" for the collection
  std::string subresource; // "status", "scale", ...

  ResourceRef withNamespace(std::string n) const {
    ResourceRef r = *this;
    r.ns = std::move(n);
    return r;
  }
  ResourceRef withName(std::string n) const {
    ResourceRef r = *this;
    r.name = std::move(n);
    return r;
  }
  // URL path (no query), e.g. "/apis/apps/v1/namespaces/default/deployments/web".
  std::string path() const;
};

struct ListOptions {
  std::string labelSelector;
  std::string fieldSelector;
  int64_t limit = 0;              // 0: no paging
  std::string continueToken;
  std::string resourceVersion;    // "" = most recent (consistent read)
  std::string resourceVersionMatch;
  // Watch only:
  int timeoutSeconds = 0;
  bool allowWatchBookmarks = false;
};

enum class PatchType { kMerge, kJson, kStrategicMerge, kApply };

struct PatchOptions {
  std::string fieldManager;  // required for kApply
  bool force = false;        // kApply: take ownership of conflicting fields
};

struct DeleteOptions {
  std::string preconditionUid;
  std::string preconditionResourceVersion;
  std::string propagationPolicy;  // "Foreground", "Background", "Orphan" or "" (server default)
  std::optional<int64_t> gracePeriodSeconds;
};

// Content type for a patch type, e.g. "application/merge-patch+json".
std::string_view patchContentType(PatchType type);
// Percent-encodes a query parameter value.
std::string urlEncode(std::string_view s);
// The query string (without "?") for list/watch options; `watch` adds watch=true.
std::string listQuery(const ListOptions& options, bool watch);
// Decodes an error response: the Status body if there is one, else the HTTP status.
Status statusFromResponse(int httpStatus, std::string_view body);

class RestClient {
 public:
  explicit RestClient(HttpClientPtr http);

  [[nodiscard]] StatusOr<Json> get(const ResourceRef& ref, Canceller* cancel = nullptr) const;
  // One page (or everything when limit is 0). The result is the server's List object.
  [[nodiscard]] StatusOr<Json> list(const ResourceRef& ref, const ListOptions& options = {},
                                    Canceller* cancel = nullptr) const;
  // Follows `continue` tokens and returns one List with every item; its metadata.resourceVersion is
  // the snapshot's (the pages of a paged list share one). A 410 on a continue token restarts the
  // whole list once, as the token expired.
  [[nodiscard]] StatusOr<Json> listAll(const ResourceRef& ref, ListOptions options = {},
                                       Canceller* cancel = nullptr) const;
  // POST to the collection. The namespace comes from `ref.ns`, else from the object.
  [[nodiscard]] StatusOr<Json> create(const ResourceRef& ref, const JsonValue& object,
                                      std::string_view fieldManager = "") const;
  // POSTs every object to the collection, up to maxInFlight at a time, from this thread alone (see
  // HttpClient::sendAll), and returns each create's outcome in order. The created objects are not
  // decoded: a caller creating many reads them back from its informer.
  [[nodiscard]] std::vector<Status> createMany(const ResourceRef& ref, const std::vector<const JsonValue*>& objects,
                                               size_t maxInFlight = 32, std::string_view fieldManager = "") const;
  // PUT. Name and namespace default to the object's. A stale resourceVersion fails with
  // 409 Conflict (compare Status::reason() == "Conflict").
  [[nodiscard]] StatusOr<Json> update(const ResourceRef& ref, const JsonValue& object,
                                      std::string_view fieldManager = "") const;
  [[nodiscard]] StatusOr<Json> updateStatus(const ResourceRef& ref, const JsonValue& object) const;
  [[nodiscard]] StatusOr<Json> patch(const ResourceRef& ref, PatchType type, std::string_view patch,
                                     const PatchOptions& options = {}) const;
  [[nodiscard]] StatusOr<Json> patchStatus(const ResourceRef& ref, PatchType type, std::string_view patch,
                                           const PatchOptions& options = {}) const;
  // DELETE; returns what the server returns (the object while finalizers run, or a Status).
  [[nodiscard]] StatusOr<Json> remove(const ResourceRef& ref, const DeleteOptions& options = {}) const;
  // Opens a watch (watch=true) and returns once the response headers arrive. An HTTP error status
  // (e.g. 410 Gone) comes back as an error Status decoded from the body. The Canceller, if any,
  // must outlive the stream.
  [[nodiscard]] StatusOr<LineStreamPtr> watch(const ResourceRef& ref, const ListOptions& options,
                                              Canceller* cancel = nullptr) const;

  const HttpClientPtr& http() const { return http_; }

 private:
  StatusOr<Json> call(const std::string& method, const std::string& target, const std::string& body,
                      std::string_view contentType, Canceller* cancel = nullptr) const;
  ResourceRef objectRef(const ResourceRef& ref, const JsonValue& object) const;
  // The collection's path (namespace from `ref`, else the object's) with ?fieldManager.
  static std::string createTarget(const ResourceRef& ref, const JsonValue& object, std::string_view fieldManager);

  const HttpClientPtr http_;
};
using RestClientPtr = std::shared_ptr<RestClient>;

}  // namespace kube
