#include "kube/rest_client.h"

#include <cctype>

namespace kube {

namespace {

const char* reasonForCode(int code) {
  switch (code) {
    case 400: return "BadRequest";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "NotFound";
    case 405: return "MethodNotAllowed";
    case 406: return "NotAcceptable";
    case 409: return "Conflict";
    case 410: return "Expired";
    case 413: return "RequestEntityTooLarge";
    case 415: return "UnsupportedMediaType";
    case 422: return "Invalid";
    case 429: return "TooManyRequests";
    case 500: return "InternalError";
    case 503: return "ServiceUnavailable";
    case 504: return "Timeout";
    default: return "Unknown";
  }
}

void addParam(std::string& q, std::string_view k, std::string_view v) {
  if (!q.empty()) q += '&';
  q += k;
  q += '=';
  q += urlEncode(v);
}

std::string withQuery(const std::string& path, const std::string& query) {
  return query.empty() ? path : path + "?" + query;
}

}  // namespace

std::string ResourceRef::path() const {
  std::string p = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (!ns.empty()) p += "/namespaces/" + urlEncode(ns);
  p += "/" + resource;
  if (!name.empty()) {
    p += "/" + urlEncode(name);
    if (!subresource.empty()) p += "/" + subresource;
  }
  return p;
}

std::string_view patchContentType(PatchType type) {
  switch (type) {
    case PatchType::kMerge: return "application/merge-patch+json";
    case PatchType::kJson: return "application/json-patch+json";
    case PatchType::kStrategicMerge: return "application/strategic-merge-patch+json";
    case PatchType::kApply: return "application/apply-patch+yaml";
  }
  return "application/merge-patch+json";
}

std::string urlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

std::string listQuery(const ListOptions& o, bool watch) {
  std::string q;
  if (watch) addParam(q, "watch", "true");
  if (!o.labelSelector.empty()) addParam(q, "labelSelector", o.labelSelector);
  if (!o.fieldSelector.empty()) addParam(q, "fieldSelector", o.fieldSelector);
  if (o.limit > 0) addParam(q, "limit", std::to_string(o.limit));
  if (!o.continueToken.empty()) addParam(q, "continue", o.continueToken);
  if (!o.resourceVersion.empty()) addParam(q, "resourceVersion", o.resourceVersion);
  if (!o.resourceVersionMatch.empty()) addParam(q, "resourceVersionMatch", o.resourceVersionMatch);
  if (o.timeoutSeconds > 0) addParam(q, "timeoutSeconds", std::to_string(o.timeoutSeconds));
  if (watch && o.allowWatchBookmarks) addParam(q, "allowWatchBookmarks", "true");
  return q;
}

Status statusFromResponse(int httpStatus, std::string_view body) {
  auto doc = parseJson(body);
  if (doc && doc->IsObject() && getString(*doc, {"kind"}) == "Status") {
    int code = static_cast<int>(getInt(*doc, {"code"}).value_or(httpStatus));
    std::string reason = getString(*doc, {"reason"});
    if (reason.empty()) reason = reasonForCode(code);
    return Status(code, reason, getString(*doc, {"message"}));
  }
  std::string msg(body.substr(0, 512));
  if (msg.empty()) msg = "HTTP " + std::to_string(httpStatus);
  return Status(httpStatus, reasonForCode(httpStatus), msg);
}

RestClient::RestClient(HttpClientPtr http) : http_(std::move(http)) {}

StatusOr<Json> RestClient::call(const std::string& method, const std::string& target, const std::string& body,
                                std::string_view contentType, Canceller* cancel) const {
  HttpRequest rq;
  rq.method = method;
  rq.target = target;
  rq.body = body;
  if (!body.empty()) rq.contentType = std::string(contentType);
  auto resp = http_->send(rq, cancel);
  if (!resp) return resp.status();
  if (resp->status < 200 || resp->status >= 300) return statusFromResponse(resp->status, resp->body);
  if (resp->body.empty()) return Json(rapidjson::kObjectType);
  auto doc = parseJson(resp->body);
  if (!doc) {
    return Status::internal(method + " " + target + ": server sent invalid JSON: " + doc.status().message());
  }
  return doc;
}

ResourceRef RestClient::objectRef(const ResourceRef& ref, const JsonValue& object) const {
  ResourceRef r = ref;
  if (r.name.empty()) r.name = name(object);
  if (r.ns.empty()) r.ns = ns(object);
  return r;
}

StatusOr<Json> RestClient::get(const ResourceRef& ref, Canceller* cancel) const {
  return call("GET", ref.path(), "", "", cancel);
}

StatusOr<Json> RestClient::list(const ResourceRef& ref, const ListOptions& options, Canceller* cancel) const {
  ResourceRef r = ref;
  r.name.clear();
  return call("GET", withQuery(r.path(), listQuery(options, false)), "", "", cancel);
}

StatusOr<Json> RestClient::listAll(const ResourceRef& ref, ListOptions options, Canceller* cancel) const {
  bool restarted = false;
  Json all;
  all.SetObject();
  JsonValue items(rapidjson::kArrayType);
  for (;;) {
    auto page = list(ref, options, cancel);
    if (!page && page.status().code() == 410 && !options.continueToken.empty() && !restarted) {
      // The continue token expired: start over (once) from a fresh snapshot.
      restarted = true;
      options.continueToken.clear();
      items.SetArray();
      continue;
    }
    if (!page) return page.status();
    if (JsonValue* pageItems = find(*page, {"items"}); pageItems != nullptr && pageItems->IsArray()) {
      for (auto& it : pageItems->GetArray()) items.PushBack(JsonValue(it, all.GetAllocator()), all.GetAllocator());
    }
    std::string cont = getString(*page, {"metadata", "continue"});
    if (cont.empty()) {
      // Keep the last page's envelope (kind, apiVersion, metadata.resourceVersion).
      for (auto& m : page->GetObject()) {
        if (view(m.name) == "items") continue;
        setMember(all, view(m.name), JsonValue(m.value, all.GetAllocator()), all.GetAllocator());
      }
      if (JsonValue* md = find(all, {"metadata"})) removeMember(*md, "continue");
      setMember(all, "items", std::move(items), all.GetAllocator());
      return all;
    }
    options.continueToken = cont;
  }
}

std::string RestClient::createTarget(const ResourceRef& ref, const JsonValue& object, std::string_view fieldManager) {
  ResourceRef r = ref;
  r.name.clear();
  r.subresource.clear();
  if (r.ns.empty()) r.ns = ns(object);
  std::string q;
  if (!fieldManager.empty()) addParam(q, "fieldManager", fieldManager);
  return withQuery(r.path(), q);
}

StatusOr<Json> RestClient::create(const ResourceRef& ref, const JsonValue& object,
                                  std::string_view fieldManager) const {
  return call("POST", createTarget(ref, object, fieldManager), toJson(object), "application/json");
}

std::vector<Status> RestClient::createMany(const ResourceRef& ref, const std::vector<const JsonValue*>& objects,
                                           size_t maxInFlight, std::string_view fieldManager) const {
  std::vector<HttpRequest> rqs(objects.size());
  for (size_t i = 0; i < objects.size(); ++i) {
    rqs[i].method = "POST";
    rqs[i].target = createTarget(ref, *objects[i], fieldManager);
    rqs[i].body = toJson(*objects[i]);
    rqs[i].contentType = "application/json";
  }
  SendAllOptions options;
  options.maxInFlight = maxInFlight;
  auto responses = http_->sendAll(rqs, options);
  std::vector<Status> out;
  out.reserve(responses.size());
  for (auto& resp : responses) {
    if (!resp) out.push_back(resp.status());
    else if (resp->status < 200 || resp->status >= 300) out.push_back(statusFromResponse(resp->status, resp->body));
    else out.push_back(Status::ok());
  }
  return out;
}

StatusOr<Json> RestClient::update(const ResourceRef& ref, const JsonValue& object,
                                  std::string_view fieldManager) const {
  ResourceRef r = objectRef(ref, object);
  if (r.name.empty()) return Status::badRequest("update: the object has no metadata.name");
  std::string q;
  if (!fieldManager.empty()) addParam(q, "fieldManager", fieldManager);
  return call("PUT", withQuery(r.path(), q), toJson(object), "application/json");
}

StatusOr<Json> RestClient::updateStatus(const ResourceRef& ref, const JsonValue& object) const {
  ResourceRef r = objectRef(ref, object);
  r.subresource = "status";
  return update(r, object);
}

StatusOr<Json> RestClient::patch(const ResourceRef& ref, PatchType type, std::string_view patch,
                                 const PatchOptions& options) const {
  if (ref.name.empty()) return Status::badRequest("patch: no resource name given");
  if (type == PatchType::kApply && options.fieldManager.empty()) {
    return Status::badRequest("patch: server-side apply requires a fieldManager");
  }
  std::string q;
  if (!options.fieldManager.empty()) addParam(q, "fieldManager", options.fieldManager);
  if (options.force) addParam(q, "force", "true");
  return call("PATCH", withQuery(ref.path(), q), std::string(patch), patchContentType(type));
}

StatusOr<Json> RestClient::patchStatus(const ResourceRef& ref, PatchType type, std::string_view patch,
                                       const PatchOptions& options) const {
  ResourceRef r = ref;
  r.subresource = "status";
  return this->patch(r, type, patch, options);
}

StatusOr<Json> RestClient::remove(const ResourceRef& ref, const DeleteOptions& options) const {
  if (ref.name.empty()) return Status::badRequest("delete: no resource name given");
  Json body;
  body.SetObject();
  auto& a = body.GetAllocator();
  setString(body, "kind", "DeleteOptions", a);
  setString(body, "apiVersion", "v1", a);
  if (!options.preconditionUid.empty() || !options.preconditionResourceVersion.empty()) {
    JsonValue& pre = ensureObject(body, "preconditions", a);
    if (!options.preconditionUid.empty()) setString(pre, "uid", options.preconditionUid, a);
    if (!options.preconditionResourceVersion.empty()) {
      setString(pre, "resourceVersion", options.preconditionResourceVersion, a);
    }
  }
  if (!options.propagationPolicy.empty()) setString(body, "propagationPolicy", options.propagationPolicy, a);
  if (options.gracePeriodSeconds) {
    setMember(body, "gracePeriodSeconds", JsonValue(static_cast<int64_t>(*options.gracePeriodSeconds)), a);
  }
  return call("DELETE", ref.path(), toJson(body), "application/json");
}

StatusOr<LineStreamPtr> RestClient::watch(const ResourceRef& ref, const ListOptions& options,
                                          Canceller* cancel) const {
  ResourceRef r = ref;
  r.name.clear();
  HttpRequest rq;
  rq.target = withQuery(r.path(), listQuery(options, true));
  auto s = http_->stream(rq, cancel);
  if (!s) return s.status();
  int code = (*s)->status();
  if (code >= 200 && code < 300) return s;
  // Read the (short) error body so the caller gets the server's reason, e.g. 410 Expired.
  std::string body;
  std::string line;
  for (int i = 0; i < 1000; ++i) {
    auto more = (*s)->readLine(line);
    if (!more || !*more) break;
    body += line;
  }
  return statusFromResponse(code, body);
}

}  // namespace kube
