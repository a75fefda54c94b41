#include "apiserver/api.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <set>
#include <thread>

#include "apiserver/discovery.h"
#include "apiserver/patch.h"
#include "apiserver/printers.h"
#include "apiserver/protobuf.h"
#include "apiserver/schema.h"
#include "apiserver/selectors.h"
#include "kube/thread_name.h"
#include "kube/kubeconfig.h"
#include "kube/labels.h"
#include "kube/timeutil.h"
#include "kube/yaml.h"

namespace apiserver {

using kube::Json;
using kube::JsonValue;
using kube::Status;
using kube::StatusOr;

// ---------------------------------------------------------------------------------------------
// Rendering helpers

std::string qualifiedResource(const ResourceType& rt) {
  return rt.group.empty() ? rt.resource : rt.resource + "." + rt.group;
}

std::string qualifiedKind(const ResourceType& rt) {
  return rt.group.empty() ? rt.kind : rt.kind + "." + rt.group;
}

std::string statusJson(const Status& st, const std::string& name, const std::string& group,
                       const std::string& kind) {
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "kind", "Status", a);
  kube::setString(d, "apiVersion", "v1", a);
  d.AddMember("metadata", JsonValue(rapidjson::kObjectType), a);
  kube::setString(d, "status", "Failure", a);
  kube::setString(d, "message", st.message(), a);
  kube::setString(d, "reason", st.reason(), a);
  if (!name.empty() || !kind.empty()) {
    JsonValue det(rapidjson::kObjectType);
    if (!name.empty()) kube::setString(det, "name", name, a);
    if (!group.empty()) kube::setString(det, "group", group, a);
    if (!kind.empty()) kube::setString(det, "kind", kind, a);
    if (!st.causes().empty()) {
      JsonValue causes(rapidjson::kArrayType);
      for (const auto& c : st.causes()) {
        JsonValue cv(rapidjson::kObjectType);
        kube::setString(cv, "reason", c.reason, a);
        kube::setString(cv, "message", c.message, a);
        kube::setString(cv, "field", c.field, a);
        causes.PushBack(std::move(cv), a);
      }
      det.AddMember("causes", std::move(causes), a);
    }
    d.AddMember("details", std::move(det), a);
  }
  d.AddMember("code", st.code(), a);
  return kube::toJson(d);
}

namespace {

constexpr const char* kJson = "application/json";
// Watches: how long a busy watch waits to gather events into one write, and the most it gathers.
constexpr std::chrono::microseconds kWatchBatchWindow{1000};
constexpr size_t kWatchBatchBytes = size_t{256} << 10;

Status notFound(const ResourceType& rt, const std::string& name) {
  return Status::notFound(qualifiedResource(rt) + " \"" + name + "\" not found");
}

Status conflict(const ResourceType& rt, const std::string& name) {
  return Status::conflict("Operation cannot be fulfilled on " + qualifiedResource(rt) + " \"" +
                          name +
                          "\": the object has been modified; please apply your changes to the "
                          "latest version and try again");
}

// Field errors are rendered "<field>: <type>: <detail>"; the causes repeat them structured, which
// is what kubectl prints under "The Widget "w" is invalid:".
std::vector<kube::StatusCause> causesOf(const std::vector<std::string>& errs) {
  static const std::pair<const char*, const char*> kReasons[] = {
      {"Required value", "FieldValueRequired"},   {"Invalid value", "FieldValueInvalid"},
      {"Unsupported value", "FieldValueNotSupported"}, {"Too long", "FieldValueTooLong"},
      {"Too many", "FieldValueTooMany"},         {"Duplicate value", "FieldValueDuplicate"},
      {"Forbidden", "FieldValueForbidden"},      {"Not found", "FieldValueNotFound"}};
  std::vector<kube::StatusCause> out;
  for (const auto& e : errs) {
    kube::StatusCause c;
    size_t sep = e.find(": ");
    c.field = sep == std::string::npos ? "" : e.substr(0, sep);
    c.message = sep == std::string::npos ? e : e.substr(sep + 2);
    c.reason = "FieldValueInvalid";
    for (const auto& [type, reason] : kReasons) {
      if (c.message.rfind(type, 0) == 0) c.reason = reason;
    }
    out.push_back(std::move(c));
  }
  return out;
}

Status invalid(const ResourceType& rt, const std::string& name,
               const std::vector<std::string>& errs) {
  std::string msg = qualifiedKind(rt) + " \"" + name + "\" is invalid: ";
  if (errs.size() == 1) {
    msg += errs[0];
  } else {
    msg += "[";
    for (size_t i = 0; i < errs.size(); ++i) msg += (i ? ", " : "") + errs[i];
    msg += "]";
  }
  return Status::invalid(msg).withCauses(causesOf(errs));
}

std::string rvString(int64_t rv) { return std::to_string(rv); }

void setRv(Json& obj, int64_t rv) {
  kube::setString(kube::ensureObject(obj, "metadata", obj.GetAllocator()), "resourceVersion",
                  rvString(rv), obj.GetAllocator());
}

// Copies member `name` of `from` into `to` (or removes it from `to` when `from` lacks it).
void copyMember(Json& to, const JsonValue& from, const char* name) {
  const JsonValue* v = kube::find(from, {name});
  if (v == nullptr) {
    kube::removeMember(to, name);
  } else {
    kube::setMember(to, name, JsonValue(*v, to.GetAllocator()), to.GetAllocator());
  }
}

// Everything but metadata (and status when it is a subresource): what bumps generation.
std::string specFingerprint(const JsonValue& obj, bool statusIsSubresource) {
  Json d(rapidjson::kObjectType);
  if (!obj.IsObject()) return "";
  for (const auto& m : obj.GetObject()) {
    std::string_view n(m.name.GetString(), m.name.GetStringLength());
    if (n == "metadata" || n == "apiVersion" || n == "kind") continue;
    if (statusIsSubresource && n == "status") continue;
    d.AddMember(JsonValue(m.name, d.GetAllocator()), JsonValue(m.value, d.GetAllocator()),
                d.GetAllocator());
  }
  return kube::toJson(d);
}

bool hasFinalizer(const JsonValue& obj, std::string_view f) {
  const JsonValue* fs = kube::find(obj, {"metadata", "finalizers"});
  if (fs == nullptr || !fs->IsArray()) return false;
  for (const auto& v : fs->GetArray()) {
    if (kube::view(v) == f) return true;
  }
  return false;
}

size_t finalizerCount(const JsonValue& obj) {
  const JsonValue* fs = kube::find(obj, {"metadata", "finalizers"});
  return fs != nullptr && fs->IsArray() ? fs->Size() : 0;
}

void addFinalizer(Json& obj, std::string_view f) {
  if (hasFinalizer(obj, f)) return;
  auto& a = obj.GetAllocator();
  JsonValue& md = kube::ensureObject(obj, "metadata", a);
  auto it = md.FindMember("finalizers");
  if (it == md.MemberEnd() || !it->value.IsArray()) {
    kube::setMember(md, "finalizers", JsonValue(rapidjson::kArrayType), a);
    it = md.FindMember("finalizers");
  }
  it->value.PushBack(kube::str(f, a), a);
}

// The namespace of `obj` must match the request's; fills it in when absent.
Status reconcileNamespace(const ResourceType& rt, Json& obj, const std::string& ns) {
  auto& a = obj.GetAllocator();
  JsonValue& md = kube::ensureObject(obj, "metadata", a);
  std::string objNs = kube::getString(md, {"namespace"});
  if (!rt.namespaced) {
    kube::removeMember(md, "namespace");
    return Status::ok();
  }
  if (!objNs.empty() && objNs != ns) {
    return Status::badRequest(
        "the namespace of the provided object does not match the namespace sent on the request");
  }
  kube::setString(md, "namespace", ns, a);
  return Status::ok();
}

Status checkTypeMeta(const ResourceType& rt, Json& obj) {
  auto& a = obj.GetAllocator();
  std::string apiVersion = kube::getString(obj, {"apiVersion"});
  std::string kind = kube::getString(obj, {"kind"});
  if (!kind.empty() && kind != rt.kind) {
    return Status::badRequest("the kind in the data (" + kind +
                              ") does not match the expected kind (" + rt.kind + ")");
  }
  if (!apiVersion.empty() && apiVersion != rt.groupVersion()) {
    return Status::badRequest("the API version in the data (" + apiVersion +
                              ") does not match the expected API version (" + rt.groupVersion() +
                              ")");
  }
  kube::setString(obj, "apiVersion", rt.groupVersion(), a);
  kube::setString(obj, "kind", rt.kind, a);
  return Status::ok();
}

void recordManager(Json& obj, const ResourceType& rt, const std::string& manager,
                   const std::string& operation, const std::string& subresource) {
  if (manager.empty()) return;
  auto& a = obj.GetAllocator();
  JsonValue& md = kube::ensureObject(obj, "metadata", a);
  auto it = md.FindMember("managedFields");
  if (it == md.MemberEnd() || !it->value.IsArray()) {
    kube::setMember(md, "managedFields", JsonValue(rapidjson::kArrayType), a);
    it = md.FindMember("managedFields");
  }
  JsonValue& list = it->value;
  for (auto e = list.Begin(); e != list.End(); ++e) {
    if (kube::getString(*e, {"manager"}) == manager &&
        kube::getString(*e, {"operation"}) == operation &&
        kube::getString(*e, {"subresource"}) == subresource) {
      kube::setString(*e, "time", kube::nowTime(), a);
      return;
    }
  }
  JsonValue e(rapidjson::kObjectType);
  kube::setString(e, "manager", manager, a);
  kube::setString(e, "operation", operation, a);
  kube::setString(e, "apiVersion", rt.groupVersion(), a);
  kube::setString(e, "time", kube::nowTime(), a);
  kube::setString(e, "fieldsType", "FieldsV1", a);
  e.AddMember("fieldsV1", JsonValue(rapidjson::kObjectType), a);
  if (!subresource.empty()) kube::setString(e, "subresource", subresource, a);
  list.PushBack(std::move(e), a);
}

// Built-in kind rules that a schema would express for a CRD.
void validateBuiltin(const ResourceType& rt, Json& obj, std::vector<std::string>& errs) {
  auto& a = obj.GetAllocator();
  auto stringMap = [&](const char* field) {
    const JsonValue* m = kube::find(obj, {field});
    if (m == nullptr || m->IsNull()) return;
    if (!m->IsObject()) {
      errs.push_back(std::string(field) + ": Invalid value: must be a map of strings");
      return;
    }
    for (const auto& kv : m->GetObject()) {
      if (!kv.value.IsString()) {
        errs.push_back(std::string(field) + "[" + kv.name.GetString() +
                       "]: Invalid value: must be a string");
      }
    }
  };
  if (rt.group.empty() && rt.kind == "ConfigMap") {
    stringMap("data");
    stringMap("binaryData");
  } else if (rt.group.empty() && rt.kind == "Secret") {
    stringMap("data");
    stringMap("stringData");
    if (errs.empty()) {
      // stringData is write-only convenience: fold it into data, base64-encoded.
      if (const JsonValue* sd = kube::find(obj, {"stringData"}); sd != nullptr && sd->IsObject()) {
        JsonValue& data = kube::ensureObject(obj, "data", a);
        for (const auto& kv : sd->GetObject()) {
          kube::setString(data, kube::view(kv.name), kube::base64Encode(kube::view(kv.value)), a);
        }
      }
      kube::removeMember(obj, "stringData");
      if (const JsonValue* d = kube::find(obj, {"data"}); d != nullptr && d->IsObject()) {
        for (const auto& kv : d->GetObject()) {
          if (!kube::base64Decode(kube::view(kv.value))) {
            errs.push_back(std::string("data[") + kv.name.GetString() +
                           "]: Invalid value: illegal base64 data");
          }
        }
      }
      if (kube::getString(obj, {"type"}).empty()) kube::setString(obj, "type", "Opaque", a);
    }
  } else if (rt.group.empty() && rt.kind == "Namespace") {
    JsonValue& status = kube::ensureObject(obj, "status", a);
    if (kube::getString(status, {"phase"}).empty()) kube::setString(status, "phase", "Active", a);
    JsonValue& spec = kube::ensureObject(obj, "spec", a);
    if (kube::find(spec, {"finalizers"}) == nullptr) {
      JsonValue f(rapidjson::kArrayType);
      f.PushBack("kubernetes", a);
      spec.AddMember("finalizers", std::move(f), a);
    }
  } else if (rt.group.empty() && rt.kind == "Service") {
    JsonValue& spec = kube::ensureObject(obj, "spec", a);
    if (kube::getString(spec, {"type"}).empty()) kube::setString(spec, "type", "ClusterIP", a);
  }
}

// Metadata rules every kind shares: name, labels, annotations.
void validateMetadata(const ResourceType& rt, const Json& obj, std::vector<std::string>& errs) {
  std::string name = kube::name(obj);
  std::string e = rt.kind == "Namespace" ? validateDnsLabel(name) : validateDnsSubdomain(name);
  if (name.empty()) {
    errs.push_back("metadata.name: Required value: name or generateName is required");
  } else if (!e.empty()) {
    errs.push_back("metadata.name: Invalid value: \"" + name + "\": " + e);
  }
  const JsonValue* md = kube::find(obj, {"metadata"});
  if (md == nullptr || !md->IsObject()) {
    errs.push_back("metadata: Invalid value: must be an object");
    return;
  }
  if (const JsonValue* labels = kube::find(*md, {"labels"}); labels != nullptr && !labels->IsNull()) {
    if (!labels->IsObject()) {
      errs.push_back("metadata.labels: Invalid value: must be a map of strings");
    } else {
      for (const auto& kv : labels->GetObject()) {
        std::string k(kv.name.GetString(), kv.name.GetStringLength());
        Status ke = kube::validateLabelKey(k);
        if (!ke) errs.push_back("metadata.labels: Invalid value: \"" + k + "\": " + ke.message());
        if (!kv.value.IsString()) {
          errs.push_back("metadata.labels: Invalid value: label values must be strings");
        } else {
          Status ve = kube::validateLabelValue(kube::view(kv.value));
          if (!ve) {
            errs.push_back("metadata.labels: Invalid value: \"" + std::string(kube::view(kv.value)) +
                           "\": " + ve.message());
          }
        }
      }
    }
  }
  if (const JsonValue* ann = kube::find(*md, {"annotations"}); ann != nullptr && !ann->IsNull()) {
    size_t total = 0;
    if (!ann->IsObject()) {
      errs.push_back("metadata.annotations: Invalid value: must be a map of strings");
    } else {
      for (const auto& kv : ann->GetObject()) {
        if (!kv.value.IsString()) {
          errs.push_back("metadata.annotations: Invalid value: annotation values must be strings");
        } else {
          total += kv.name.GetStringLength() + kv.value.GetStringLength();
        }
      }
    }
    if (total > size_t{256} * 1024) {
      errs.push_back("metadata.annotations: Too long: must have at most 262144 bytes");
    }
  }
  if (const JsonValue* f = kube::find(*md, {"finalizers"}); f != nullptr && !f->IsNull()) {
    if (!f->IsArray()) {
      errs.push_back("metadata.finalizers: Invalid value: must be a list of strings");
    } else {
      for (const auto& v : f->GetArray()) {
        if (!v.IsString()) errs.push_back("metadata.finalizers: Invalid value: must be strings");
      }
    }
  }
}

std::string deletedEventText(const Entry& cur, int64_t rv) {
  auto doc = kube::parseJson(*cur.json);
  if (!doc) return *cur.json;
  setRv(*doc, rv);
  return kube::toJson(*doc);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// One request

struct Api::Call {
  const kube::ServerRequest& req;
  kube::ResponseWriter& w;
  std::map<std::string, std::string> query;
  RequestInfo ri;
  ResourceTypePtr rt;
  Identity id;
  std::string body;  // the request body as JSON (protobuf bodies are decoded into it)

  std::string param(const std::string& k) const {
    auto it = query.find(k);
    return it == query.end() ? "" : it->second;
  }
  void fail(const Status& st) {
    // Invalid errors name the kind (as NewInvalid does); the others name the resource.
    std::string kind = st.code() == 422 && rt ? rt->kind : ri.resource;
    w.respond(st.code(), kJson, statusJson(st, ri.name, ri.group, kind));
  }
  void ok(int code, const std::string& body) { w.respond(code, kJson, body); }
};

Api::Api(Storage& storage, Registry& registry, Authenticator& auth, ApiOptions options)
    : storage_(storage), registry_(registry), auth_(auth), options_(std::move(options)) {}

namespace {

// Remembers the status a response was given, for the request metrics.
class StatusRecorder final : public kube::ResponseWriter {
 public:
  explicit StatusRecorder(kube::ResponseWriter& w) : w_(w) {}
  void setHeader(const std::string& n, const std::string& v) override { w_.setHeader(n, v); }
  void respond(int status, std::string_view ct, std::string_view body) override {
    code = status;
    w_.respond(status, ct, body);
  }
  bool beginStream(int status, std::string_view ct) override {
    code = status;
    return w_.beginStream(status, ct);
  }
  bool write(std::string_view chunk) override { return w_.write(chunk); }
  bool peerClosed() override { return w_.peerClosed(); }
  int code = 0;

 private:
  kube::ResponseWriter& w_;
};

// kube-apiserver's verb label: the HTTP method, with LIST and WATCH told apart from GET and
// APPLY from PATCH.
std::string metricVerb(const RequestInfo& ri, const kube::ServerRequest& req) {
  if (ri.verb == "list") return "LIST";
  if (ri.verb == "watch") return "WATCH";
  if (ri.verb == "patch" && mediaType(req.header("content-type")) == "application/apply-patch+yaml") return "APPLY";
  std::string m = req.method;
  for (char& ch : m) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return m;
}

}  // namespace

void Api::handle(const kube::ServerRequest& req, kube::ResponseWriter& w) {
  if (req.path == "/metrics") {
    auto id = auth_.authenticate(req.header("authorization"));
    if (!id) {
      w.respond(401, kJson, statusJson(Status::unauthorized("Unauthorized")));
    } else if (!id->admin) {
      w.respond(403, kJson, statusJson(Status::forbidden("forbidden: User \"" + id->user +
                                                         "\" cannot get path \"/metrics\"")));
    } else {
      w.respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics_.render());
    }
    return;
  }
  auto start = std::chrono::steady_clock::now();
  StatusRecorder rec(w);
  RequestInfo ri;
  serve(req, rec, ri);
  if (!ri.isResource) return;
  RequestMetrics::Labels l{metricVerb(ri, req), ri.group, ri.version, ri.resource, ri.subresource,
                           !ri.name.empty() ? "resource" : !ri.ns.empty() ? "namespace" : "cluster"};
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  metrics_.record(l, rec.code, seconds, ri.verb == "watch");
}

void Api::serve(const kube::ServerRequest& req, kube::ResponseWriter& w, RequestInfo& riOut) {
  Call c{req, w, parseQuery(req.query), {}, nullptr, {}, req.body};
  const std::string& path = req.path;
  if (path == "/healthz" || path == "/livez" || path == "/readyz") {
    w.respond(200, "text/plain; charset=utf-8", "ok");
    return;
  }
  if (path == "/version") {
    w.respond(200, kJson, versionJson(options_.version));
    return;
  }
  auto id = auth_.authenticate(req.header("authorization"));
  if (!id) {
    w.respond(401, kJson, statusJson(Status::unauthorized("Unauthorized")));
    return;
  }
  c.id = *id;
  c.ri = parseRequestInfo(req.method, path, c.query);
  riOut = c.ri;
  if (!c.ri.isResource) {
    if (req.method != "GET") {
      c.fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
      return;
    }
    std::string contentType = kJson;
    auto body = serveDiscovery(registry_, path, req.header("accept"), options_, contentType);
    if (!body) {
      c.fail(body.status());
      return;
    }
    w.respond(200, contentType, *body);
    return;
  }
  c.rt = registry_.find(c.ri.group, c.ri.version, c.ri.resource);
  if (!c.rt) {
    c.fail(Status::notFound("the server could not find the requested resource"));
    return;
  }
  if (!c.ri.subresource.empty() &&
      !(c.ri.subresource == "status" && c.rt->statusSubresource) &&
      !(c.ri.subresource == "scale" && c.rt->scaleSubresource) &&
      !(c.ri.subresource == "finalize" && c.rt->kind == "Namespace")) {
    c.fail(Status::notFound("the server could not find the requested resource"));
    return;
  }
  if (c.rt->namespaced && !c.ri.ns.empty()) {
    std::string e = validateDnsLabel(c.ri.ns);
    if (!e.empty()) {
      c.fail(Status::badRequest("invalid namespace \"" + c.ri.ns + "\": " + e));
      return;
    }
  }
  if (c.rt->kind == "TokenReview") {
    serveTokenReview(c);
    return;
  }
  if (!c.rt->namespaced) c.ri.ns.clear();
  if (c.rt->namespaced && c.ri.ns.empty() && c.ri.verb != "list" && c.ri.verb != "watch") {
    c.fail(Status::notFound("the server could not find the requested resource"));
    return;
  }
  try {
    serveResource(c);
  } catch (const std::exception& e) {
    c.fail(Status::internal(std::string("internal error: ") + e.what()));
  }
}

void Api::serveResource(Call& c) {
  const std::string& verb = c.ri.verb;
  if (mediaType(c.req.header("content-type")) == "application/vnd.kubernetes.protobuf") {
    // kubectl's typed generators (`kubectl create namespace ...`) send protobuf.
    if (verb != "create" && verb != "update") {
      c.fail(Status::unsupportedMediaType("protobuf bodies are accepted for create and update only"));
      return;
    }
    auto decoded = decodeKubernetesProtobuf(c.body);
    if (!decoded) {
      c.fail(decoded.status());
      return;
    }
    c.body = kube::toJson(*decoded);
  }
  // For create the name is in the body: authorise after reading it.
  if (verb != "create") {
    Status st = auth_.authorize(c.id, c.ri);
    if (!st) {
      c.fail(st);
      return;
    }
  }
  if (c.ri.subresource == "scale") {
    serveScale(c);
  } else if (verb == "get") {
    serveGet(c);
  } else if (verb == "list") {
    serveList(c);
  } else if (verb == "watch") {
    serveWatch(c);
  } else if (verb == "create") {
    serveCreate(c);
  } else if (verb == "update") {
    serveUpdate(c);
  } else if (verb == "patch") {
    servePatch(c);
  } else if (verb == "delete") {
    serveDelete(c);
  } else if (verb == "deletecollection") {
    serveDeleteCollection(c);
  } else {
    c.fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
  }
}

// ---------------------------------------------------------------------------------------------
// Reads

void Api::serveGet(Call& c) {
  auto e = storage_.get(c.rt->key(c.ri.ns, c.ri.name));
  if (!e) {
    c.fail(notFound(*c.rt, c.ri.name));
    return;
  }
  std::string text = renderForVersion(*e->json, *c.rt);
  if (wantsTable(c.req.header("accept"))) {
    std::vector<std::string> items{text};
    c.w.respond(200, kJson, renderTable(*c.rt, items, rvString(e->rv), "", c.param("includeObject")));
    return;
  }
  c.ok(200, text);
}

void Api::serveList(Call& c) {
  auto sel = Selectors::parse(c.param("labelSelector"), c.param("fieldSelector"), *c.rt);
  if (!sel) {
    c.fail(sel.status());
    return;
  }
  std::string prefix = c.rt->keyPrefix() + (c.rt->namespaced && !c.ri.ns.empty() ? c.ri.ns + "/" : "");
  size_t limit = 0;
  if (!c.param("limit").empty()) {
    try {
      long long l = std::stoll(c.param("limit"));
      if (l > 0) limit = static_cast<size_t>(l);
    } catch (const std::exception&) {
      c.fail(Status::badRequest("invalid limit: " + c.param("limit")));
      return;
    }
  }
  std::string startAfter;
  int64_t listRv = 0;
  if (!c.param("continue").empty()) {
    auto tok = decodeContinue(c.param("continue"));
    if (!tok) {
      c.fail(tok.status());
      return;
    }
    startAfter = tok->second;
    listRv = tok->first;
    if (startAfter.compare(0, prefix.size(), prefix) != 0) {
      c.fail(Status::badRequest("continue key is not valid: it does not belong to this list"));
      return;
    }
  }
  std::vector<std::string> items;
  std::string lastKey;
  bool more = false;
  int64_t rv = 0;
  // Scan in pages so that selective selectors still fill `limit` items.
  std::string cursor = startAfter;
  for (;;) {
    size_t page = limit == 0 ? 0 : std::max<size_t>(limit * 2, 64);
    auto batch = storage_.list(prefix, cursor, page, &rv);
    for (auto& [key, entry] : batch) {
      cursor = key;
      if (limit != 0 && items.size() >= limit) {
        more = true;
        break;
      }
      if (!sel->empty() && !sel->matches(*entry.json)) continue;
      items.push_back(renderForVersion(*entry.json, *c.rt));
      lastKey = key;
    }
    if (more || page == 0 || batch.size() < page) break;
  }
  if (listRv == 0) listRv = rv;
  std::string cont = more ? encodeContinue(listRv, lastKey) : "";
  if (wantsTable(c.req.header("accept"))) {
    c.w.respond(200, kJson, renderTable(*c.rt, items, rvString(listRv), cont, c.param("includeObject")));
    return;
  }
  size_t total = 256 + cont.size();
  for (const auto& i : items) total += i.size() + 1;
  std::string out;
  out.reserve(total);
  out += "{\"kind\":\"" + c.rt->listKind + "\",\"apiVersion\":\"" + c.rt->groupVersion() +
         "\",\"metadata\":{\"resourceVersion\":\"" + rvString(listRv) + "\"";
  if (!cont.empty()) out += ",\"continue\":\"" + cont + "\"";
  out += "},\"items\":[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';
    out += items[i];
  }
  items.clear();
  items.shrink_to_fit();
  out += "]}";
  c.ok(200, out);
}

void Api::serveWatch(Call& c) {
  // The connection's thread is a watch while it streams (as `top -H` and perf show it).
  kube::nameThread("api-watch");
  struct Renamer {
    ~Renamer() { kube::nameThread("http-conn"); }
  } renamer;
  auto sel = Selectors::parse(c.param("labelSelector"), c.param("fieldSelector"), *c.rt);
  if (!sel) {
    c.fail(sel.status());
    return;
  }
  if (!c.ri.name.empty()) sel->addNameRequirement(c.ri.name);
  std::string prefix = c.rt->keyPrefix() + (c.rt->namespaced && !c.ri.ns.empty() ? c.ri.ns + "/" : "");
  bool table = wantsTable(c.req.header("accept"));
  bool bookmarks = c.param("allowWatchBookmarks") == "true" || c.param("allowWatchBookmarks") == "1";
  int64_t timeout = 0;
  if (!c.param("timeoutSeconds").empty()) {
    try {
      timeout = std::stoll(c.param("timeoutSeconds"));
    } catch (const std::exception&) {
      c.fail(Status::badRequest("invalid timeoutSeconds"));
      return;
    }
  }
  if (timeout <= 0) {
    static thread_local std::mt19937 rng{std::random_device{}()};
    timeout = 1800 + static_cast<int64_t>(rng() % 1800);  // 30-60 min, as kube-apiserver
  }
  std::string rvParam = c.param("resourceVersion");
  int64_t fromRv = 0;
  std::vector<std::string> initial;
  if (rvParam.empty() || rvParam == "0") {
    // Synthetic ADDED events for the current state, then everything after it.
    auto all = storage_.list(prefix, "", 0, &fromRv);
    for (auto& [key, entry] : all) {
      if (!sel->empty() && !sel->matches(*entry.json)) continue;
      initial.push_back(renderForVersion(*entry.json, *c.rt));
    }
  } else {
    try {
      size_t used = 0;
      fromRv = std::stoll(rvParam, &used);
      if (used != rvParam.size() || fromRv < 0) throw std::invalid_argument("rv");
    } catch (const std::exception&) {
      c.fail(Status::badRequest("invalid resourceVersion: " + rvParam));
      return;
    }
  }
  auto watcher = storage_.watch(prefix, fromRv);
  // Appends one event's line to `out`.
  auto appendEvent = [&](std::string& out, const char* type, const std::string& objText) {
    out += "{\"type\":\"";
    out += type;
    out += "\",\"object\":";
    if (table) {
      std::vector<std::string> one{objText};
      out += renderTable(*c.rt, one, "", "", c.param("includeObject"));
    } else {
      out += objText;
    }
    out += "}\n";
  };
  // Writes `out` once it holds at least `atLeast` bytes (1: whatever it holds); false once the
  // peer is gone.
  auto flush = [&](std::string& out, size_t atLeast) {
    if (out.size() < atLeast) return true;
    bool ok = c.w.write(out);
    out.clear();
    return ok;
  };
  if (!c.w.beginStream(200, kJson)) return;
  if (!watcher) {
    // As kube-apiserver's watch cache: a too-old version is an ERROR event in a 200 stream.
    c.w.write("{\"type\":\"ERROR\",\"object\":" + statusJson(watcher.status()) + "}\n");
    return;
  }
  std::string batch;
  for (const auto& text : initial) {
    appendEvent(batch, "ADDED", text);
    if (!flush(batch, kWatchBatchBytes)) return;
  }
  if (!flush(batch, 1)) return;
  initial.clear();
  initial.shrink_to_fit();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  auto nextBookmark = std::chrono::steady_clock::now() +
                      std::chrono::seconds(options_.bookmarkIntervalSeconds);
  std::vector<Event> events;
  StreamPacer pacer(kWatchBatchWindow);
  for (;;) {
    int64_t safeRv = storage_.currentRv();
    events.clear();
    bool open = (*watcher)->next(events, std::chrono::milliseconds(1000));
    // Under a stream of events, wait one window for more and send them together: one wake-up of
    // this thread, one TLS record and one write for the lot, instead of one of each per event. A
    // quiet watch (an agent's own allocations, one at a time) is never delayed.
    if (open && !events.empty() && pacer.pace()) open = (*watcher)->next(events, std::chrono::milliseconds(0));
    for (const auto& e : events) {
      bool newMatch = sel->empty() || sel->matches(*e.object);
      bool oldMatch = e.old ? (sel->empty() || sel->matches(*e.old)) : false;
      const char* type = nullptr;
      switch (e.type) {
        case Event::Type::kAdded:
          if (newMatch) type = "ADDED";
          break;
        case Event::Type::kModified:
          if (newMatch && oldMatch) type = "MODIFIED";
          else if (newMatch) type = "ADDED";
          else if (oldMatch) type = "DELETED";
          break;
        case Event::Type::kDeleted:
          if (oldMatch || newMatch) type = "DELETED";
          break;
      }
      if (type != nullptr) appendEvent(batch, type, renderForVersion(*e.object, *c.rt));
      if (!flush(batch, kWatchBatchBytes)) return;
    }
    if (!flush(batch, 1)) return;
    if (!open) return;  // server shutting down, or this watcher fell too far behind
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return;
    if (c.w.peerClosed()) return;
    if (bookmarks && now >= nextBookmark && events.empty()) {
      std::string bm = "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"" + c.rt->kind +
                       "\",\"apiVersion\":\"" + c.rt->groupVersion() +
                       "\",\"metadata\":{\"resourceVersion\":\"" + rvString(safeRv) +
                       "\",\"annotations\":{\"k8s.io/initial-events-end\":\"false\"}}}}\n";
      if (!c.w.write(bm)) return;
      nextBookmark = now + std::chrono::seconds(options_.bookmarkIntervalSeconds);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writes

Status Api::admitCommon(const ResourceTypePtr& rt, Json& obj, const std::string& validation) {
  std::vector<std::string> errs;
  if (rt->schema) {
    SchemaOutcome out = applySchema(obj, *rt->schema, obj.GetAllocator());
    if (!out.unknownFields.empty() && validation == "Strict") {
      std::string m = "strict decoding error: ";
      for (size_t i = 0; i < out.unknownFields.size(); ++i) {
        m += (i ? ", " : "") + std::string("unknown field \"") + out.unknownFields[i] + "\"";
      }
      return Status::badRequest(m);
    }
    for (const auto& fe : out.errors) errs.push_back(fe.toString());
  }
  validateBuiltin(*rt, obj, errs);
  if (rt->group == "apiextensions.k8s.io" && rt->kind == "CustomResourceDefinition") {
    Status st = Registry::validateCrd(obj);
    if (!st) errs.push_back(st.message());
  }
  validateMetadata(*rt, obj, errs);
  if (!errs.empty()) return invalid(*rt, kube::name(obj), errs);
  return Status::ok();
}

Status Api::prepareCreate(const ResourceTypePtr& rt, const std::string& ns, Json& obj, int64_t rv,
                          const std::string& fieldManager, const std::string& validation,
                          bool isApply) {
  if (!obj.IsObject()) return Status::badRequest("the request body must be a JSON object");
  Status st = checkTypeMeta(*rt, obj);
  if (!st) return st;
  st = reconcileNamespace(*rt, obj, ns);
  if (!st) return st;
  auto& a = obj.GetAllocator();
  JsonValue& md = kube::ensureObject(obj, "metadata", a);
  if (kube::getString(md, {"name"}).empty()) {
    std::string gen = kube::getString(md, {"generateName"});
    if (!gen.empty()) {
      if (gen.size() > 58) gen.resize(58);
      kube::setString(md, "name", gen + randomSuffix(5), a);
    }
  }
  for (const char* f : {"uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "resourceVersion", "generation", "selfLink"}) {
    kube::removeMember(md, f);
  }
  if (rt->statusSubresource && rt->kind != "Namespace") kube::removeMember(obj, "status");
  st = admitCommon(rt, obj, validation);
  if (!st) return st;
  JsonValue& md2 = kube::ensureObject(obj, "metadata", a);
  kube::setString(md2, "uid", newUid(), a);
  kube::setString(md2, "creationTimestamp", kube::nowTime(), a);
  kube::setString(md2, "resourceVersion", rvString(rv), a);
  if (rt->hasGeneration) kube::setMember(md2, "generation", JsonValue(int64_t{1}), a);
  recordManager(obj, *rt, fieldManager, isApply ? "Apply" : "Update", "");
  if (rt->kind == "CustomResourceDefinition") {
    // Names are accepted and the API is served as soon as the definition is stored.
    JsonValue& status = kube::ensureObject(obj, "status", a);
    Json conds;
    conds.Parse(R"([{"type":"NamesAccepted","status":"True","reason":"NoConflicts","message":"no conflicts found"},{"type":"Established","status":"True","reason":"InitialNamesAccepted","message":"the initial names have been accepted"}])");
    for (auto& cnd : conds.GetArray()) kube::setString(cnd, "lastTransitionTime", kube::nowTime(), conds.GetAllocator());
    kube::setMember(status, "conditions", JsonValue(conds, a), a);
    if (const JsonValue* names = kube::find(obj, {"spec", "names"})) {
      kube::setMember(status, "acceptedNames", JsonValue(*names, a), a);
    }
    JsonValue stored(rapidjson::kArrayType);
    if (const JsonValue* vs = kube::find(obj, {"spec", "versions"}); vs && vs->IsArray()) {
      for (const auto& v : vs->GetArray()) {
        if (kube::getBool(v, {"storage"})) stored.PushBack(kube::str(kube::getString(v, {"name"}), a), a);
      }
    }
    kube::setMember(status, "storedVersions", std::move(stored), a);
  }
  return Status::ok();
}

Status Api::prepareUpdate(const ResourceTypePtr& rt, Json& obj, const Json& old, int64_t rv,
                          const std::string& subresource, const std::string& fieldManager,
                          const std::string& validation, bool isApply) {
  if (!obj.IsObject()) return Status::badRequest("the request body must be a JSON object");
  Status st = checkTypeMeta(*rt, obj);
  if (!st) return st;
  auto& a = obj.GetAllocator();
  std::string name = kube::name(old);
  JsonValue& md = kube::ensureObject(obj, "metadata", a);
  std::string newName = kube::getString(md, {"name"});
  if (!newName.empty() && newName != name) {
    return Status::badRequest("the name of the object (" + newName +
                              ") does not match the name on the URL (" + name + ")");
  }
  std::string ns = kube::ns(old);
  std::string newNs = kube::getString(md, {"namespace"});
  if (rt->namespaced && !newNs.empty() && newNs != ns) {
    return Status::badRequest(
        "the namespace of the provided object does not match the namespace sent on the request");
  }
  std::string objRv = kube::getString(md, {"resourceVersion"});
  if (!objRv.empty() && objRv != kube::resourceVersion(old)) return conflict(*rt, name);

  if (subresource == "status") {
    // Only status may change through /status: everything else comes from the stored object.
    Json merged = kube::cloneJson(old);
    copyMember(merged, obj, "status");
    obj.CopyFrom(merged, a);  // (not Swap: that would swap allocators under `a`)
  } else if (rt->statusSubresource) {
    copyMember(obj, old, "status");  // status is ignored on the main resource
  }
  JsonValue& md2 = kube::ensureObject(obj, "metadata", a);
  kube::setString(md2, "name", name, a);
  if (rt->namespaced) kube::setString(md2, "namespace", ns, a);
  for (const char* f : {"uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"}) {
    const JsonValue* v = kube::find(old, {"metadata", f});
    if (v != nullptr) {
      kube::setMember(md2, f, JsonValue(*v, a), a);
    } else {
      kube::removeMember(md2, f);
    }
  }
  if (kube::find(old, {"metadata", "deletionTimestamp"}) != nullptr) {
    // No new finalizers once deletion has started.
    const JsonValue* fs = kube::find(obj, {"metadata", "finalizers"});
    if (fs != nullptr && fs->IsArray()) {
      for (const auto& f : fs->GetArray()) {
        if (f.IsString() && !hasFinalizer(old, kube::view(f))) {
          return invalid(*rt, name, {"metadata.finalizers: Forbidden: no new finalizers can be "
                                     "added if the object is being deleted, found new finalizers [\"" +
                                     std::string(kube::view(f)) + "\"]"});
        }
      }
    }
  }
  if (rt->kind == "Namespace" && subresource != "finalize") {
    copyMember(obj, old, "spec");  // spec.finalizers changes only through /finalize
  }
  st = admitCommon(rt, obj, validation);
  if (!st) return st;
  JsonValue& md3 = kube::ensureObject(obj, "metadata", a);
  kube::setString(md3, "resourceVersion", rvString(rv), a);
  if (rt->hasGeneration &&
      specFingerprint(obj, rt->statusSubresource) != specFingerprint(old, rt->statusSubresource)) {
    int64_t gen = kube::getInt(old, {"metadata", "generation"}).value_or(0) + 1;
    kube::setMember(md3, "generation", JsonValue(gen), a);
  }
  recordManager(obj, *rt, fieldManager, isApply ? "Apply" : "Update", subresource);
  return Status::ok();
}

// The shared update path: read-modify-write under the storage lock, so no two writers interleave.
StatusOr<Entry> Api::writeUpdate(
    const ResourceTypePtr& rt, const std::string& ns, const std::string& name,
    const std::string& subresource, const std::string& fieldManager, const std::string& validation,
    bool dryRun, bool createIfMissing,
    const std::function<StatusOr<Json>(const Json* current)>& produce, bool* created) {
  bool deleted = false;
  bool wasCreated = false;
  std::string dryRunText;
  std::string finalText;  // the object's last state when this write completed its deletion
  // Checked outside the storage lock (Storage reads would deadlock inside a mutator); a namespace
  // deleted in between leaves an object that namespace termination then removes.
  Status nsCheck = createIfMissing && !storage_.get(rt->key(ns, name)) ? namespaceAcceptsCreates(rt, ns)
                                                                       : Status::ok();
  auto res = storage_.mutate(rt->key(ns, name), [&](const Entry* cur,
                                                     int64_t newRv) -> StatusOr<Mutation> {
    if (cur == nullptr) {
      if (!createIfMissing) return notFound(*rt, name);
      if (!nsCheck) return nsCheck;
      auto obj = produce(nullptr);
      if (!obj) return obj.status();
      JsonValue& md = kube::ensureObject(*obj, "metadata", obj->GetAllocator());
      if (kube::getString(md, {"name"}).empty()) kube::setString(md, "name", name, obj->GetAllocator());
      if (kube::name(*obj) != name) {
        return Status::badRequest("the name of the object (" + kube::name(*obj) +
                                  ") does not match the name on the URL (" + name + ")");
      }
      Status st = prepareCreate(rt, ns, *obj, newRv, fieldManager, validation, true);
      if (!st) return st;
      wasCreated = true;
      if (dryRun) {
        dryRunText = kube::toJson(*obj);
        return Mutation::noChange();
      }
      return Mutation::write(kube::toJson(*obj));
    }
    auto oldDoc = kube::parseJson(*cur->json);
    if (!oldDoc) return Status::internal("stored object is corrupt");
    auto obj = produce(&*oldDoc);
    if (!obj) return obj.status();
    Status st = prepareUpdate(rt, *obj, *oldDoc, newRv, subresource, fieldManager, validation,
                              false);
    if (!st) return st;
    // A write that changes nothing keeps the stored object and its resourceVersion.
    Json cmp = kube::cloneJson(*obj);
    setRv(cmp, cur->rv);
    auto stripTimes = [](Json& d) {
      if (JsonValue* mf = kube::find(d, {"metadata", "managedFields"}); mf && mf->IsArray()) {
        for (auto& e : mf->GetArray()) kube::removeMember(e, "time");
      }
    };
    Json oldCmp = kube::cloneJson(*oldDoc);
    stripTimes(cmp);
    stripTimes(oldCmp);
    if (cmp == oldCmp) return Mutation::noChange();
    if (dryRun) {
      dryRunText = kube::toJson(*obj);
      return Mutation::noChange();
    }
    const JsonValue* nsFinalizers = kube::find(*obj, {"spec", "finalizers"});
    bool specFinalized = rt->kind != "Namespace" || nsFinalizers == nullptr ||
                         !nsFinalizers->IsArray() || nsFinalizers->Empty();
    if (kube::find(*obj, {"metadata", "deletionTimestamp"}) != nullptr && finalizerCount(*obj) == 0 &&
        specFinalized) {
      deleted = true;  // the last finalizer is gone: the deletion completes
      finalText = kube::toJson(*obj);
      return Mutation::remove(finalText);
    }
    return Mutation::write(kube::toJson(*obj));
  });
  if (!res) return res;
  if (created != nullptr) *created = wasCreated;
  if (dryRun && !dryRunText.empty()) return Entry{0, std::make_shared<const std::string>(dryRunText)};
  if (deleted) {
    afterWrite(rt, *res, true);
    return Entry{res->rv, std::make_shared<const std::string>(std::move(finalText))};
  }
  afterWrite(rt, *res, false);
  return res;
}

Status Api::namespaceAcceptsCreates(const ResourceTypePtr& rt, const std::string& ns) {
  if (!rt->namespaced) return Status::ok();
  auto nsEntry = storage_.get("core/namespaces//" + ns);
  if (!nsEntry) return Status::notFound("namespaces \"" + ns + "\" not found");
  if (nsEntry->json->find("\"deletionTimestamp\"") != std::string::npos) {
    return Status::forbidden(qualifiedResource(*rt) + " is forbidden: unable to create new content in namespace " + ns +
                             " because it is being terminated");
  }
  return Status::ok();
}

void Api::afterWrite(const ResourceTypePtr& rt, const Entry& e, bool deleted) {
  // A CRD's removal from the registry is done by remove() (it knows the name).
  if (rt->kind == "CustomResourceDefinition" && rt->group == "apiextensions.k8s.io" && !deleted && e.json) {
    if (auto doc = kube::parseJson(*e.json)) (void)registry_.addCrd(*doc);
  }
}

StatusOr<Entry> Api::create(const ResourceTypePtr& rt, const std::string& ns, Json obj,
                            const std::string& fieldManager) {
  std::string name = kube::name(obj);
  Status nsCheck = namespaceAcceptsCreates(rt, ns);
  if (!nsCheck) return nsCheck;
  auto res = storage_.mutate(rt->key(ns, name), [&](const Entry* cur, int64_t newRv) -> StatusOr<Mutation> {
    if (cur != nullptr) return Status::alreadyExists(qualifiedResource(*rt) + " \"" + name + "\" already exists");
    Status st = prepareCreate(rt, ns, obj, newRv, fieldManager, "Strict", false);
    if (!st) return st;
    return Mutation::write(kube::toJson(obj));
  });
  if (res) afterWrite(rt, *res, false);
  return res;
}

StatusOr<Entry> Api::modify(const ResourceTypePtr& rt, const std::string& ns, const std::string& name,
                            const std::function<Status(Json&)>& edit, const std::string& subresource) {
  return writeUpdate(rt, ns, name, subresource, "foxden-server", "Ignore", false, false,
                     [&](const Json* cur) -> StatusOr<Json> {
                       Json d = kube::cloneJson(*cur);
                       Status st = edit(d);
                       if (!st) return st;
                       return d;
                     });
}

void Api::serveCreate(Call& c) {
  if (!c.ri.name.empty() || !c.ri.subresource.empty()) {
    c.fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
    return;
  }
  std::string ct = mediaType(c.req.header("content-type"));
  StatusOr<Json> body = ct == "application/yaml" ? kube::yamlToJson(c.body) : kube::parseJson(c.body);
  if (!body) {
    c.fail(body.status());
    return;
  }
  if (!body->IsObject()) {
    c.fail(Status::badRequest("the request body must be a JSON object"));
    return;
  }
  // Names from generateName are resolved before the write so authorisation sees the final name.
  auto& a = body->GetAllocator();
  JsonValue& md = kube::ensureObject(*body, "metadata", a);
  if (kube::getString(md, {"name"}).empty() && !kube::getString(md, {"generateName"}).empty()) {
    std::string gen = kube::getString(md, {"generateName"});
    if (gen.size() > 58) gen.resize(58);
    kube::setString(md, "name", gen + randomSuffix(5), a);
  }
  std::string name = kube::name(*body);
  RequestInfo ri = c.ri;
  ri.name = name;
  Status st = auth_.authorize(c.id, ri);
  if (!st) {
    c.fail(st);
    return;
  }
  if (name.empty()) {
    c.fail(invalid(*c.rt, "", {"metadata.name: Required value: name or generateName is required"}));
    return;
  }
  std::string manager = c.param("fieldManager");
  if (manager.empty()) manager = c.req.header("user-agent").substr(0, c.req.header("user-agent").find('/'));
  bool dryRun = c.param("dryRun") == "All";
  Json obj = std::move(*body);
  std::string dryText;
  Status nsCheck = namespaceAcceptsCreates(c.rt, c.ri.ns);
  if (!nsCheck) {
    c.fail(nsCheck);
    return;
  }
  // Defaults, validation and metadata before the write is decided, as kube-apiserver's
  // BeforeCreate runs before its storage create (so an invalid object is 422 even where the name
  // is taken), and outside Storage's write lock: only the revision waits for the decision.
  Status prepared = prepareCreate(c.rt, c.ri.ns, obj, 0, manager, c.param("fieldValidation"), false);
  if (!prepared) {
    c.ri.name = name;
    c.fail(prepared);
    return;
  }
  auto res = storage_.mutate(c.rt->key(c.ri.ns, name), [&](const Entry* cur, int64_t newRv) -> StatusOr<Mutation> {
    if (cur != nullptr) return Status::alreadyExists(qualifiedResource(*c.rt) + " \"" + name + "\" already exists");
    kube::setString(obj["metadata"], "resourceVersion", rvString(newRv), obj.GetAllocator());
    if (dryRun) {
      dryText = kube::toJson(obj);
      return Mutation::noChange();
    }
    return Mutation::write(kube::toJson(obj));
  });
  if (!res) {
    c.ri.name = name;
    c.fail(res.status());
    return;
  }
  if (dryRun) {
    c.ok(201, dryText);
    return;
  }
  afterWrite(c.rt, *res, false);
  c.ok(201, *res->json);
}

void Api::serveUpdate(Call& c) {
  auto body = kube::parseJson(c.body);
  if (!body) {
    c.fail(body.status());
    return;
  }
  std::string sub = c.ri.subresource;
  auto res = writeUpdate(c.rt, c.ri.ns, c.ri.name, sub, c.param("fieldManager"),
                         c.param("fieldValidation"), c.param("dryRun") == "All", false,
                         [&](const Json*) -> StatusOr<Json> { return kube::cloneJson(*body); });
  if (!res) {
    c.fail(res.status());
    return;
  }
  c.ok(200, res->json ? *res->json : statusJson(Status::ok()));
}

void Api::servePatch(Call& c) {
  std::string ct = mediaType(c.req.header("content-type"));
  bool isApply = ct == "application/apply-patch+yaml";
  StatusOr<Json> patch = isApply ? kube::yamlToJson(c.body) : kube::parseJson(c.body);
  if (!patch) {
    c.fail(patch.status());
    return;
  }
  if (ct != "application/merge-patch+json" && ct != "application/json-patch+json" &&
      ct != "application/strategic-merge-patch+json" && !isApply) {
    c.fail(Status::unsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml" +
                                        std::string(supportsStrategicMerge(c.rt->kind) && c.rt->builtin ? ", application/strategic-merge-patch+json" : "")));
    return;
  }
  if (ct == "application/strategic-merge-patch+json" && !(c.rt->builtin && supportsStrategicMerge(c.rt->kind))) {
    c.fail(Status::unsupportedMediaType("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"));
    return;
  }
  std::string manager = c.param("fieldManager");
  if (isApply && manager.empty()) {
    c.fail(Status::badRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
    return;
  }
  if (isApply && !patch->IsObject()) {
    c.fail(Status::badRequest("apply patch must be a JSON object"));
    return;
  }
  if (manager.empty()) manager = c.req.header("user-agent").substr(0, c.req.header("user-agent").find('/'));
  bool created = false;
  auto res = writeUpdate(
      c.rt, c.ri.ns, c.ri.name, c.ri.subresource, manager, c.param("fieldValidation"),
      c.param("dryRun") == "All", isApply && c.ri.subresource.empty(),
      [&](const Json* cur) -> StatusOr<Json> {
        if (cur == nullptr) return kube::cloneJson(*patch);  // apply creates
        Json d = kube::cloneJson(*cur);
        Status st;
        if (ct == "application/json-patch+json") {
          st = applyJsonPatch(d, *patch);
        } else if (ct == "application/strategic-merge-patch+json") {
          st = applyStrategicMergePatch(d, *patch, d.GetAllocator(), c.rt->kind);
        } else {
          st = applyMergePatch(d, *patch, d.GetAllocator());
        }
        if (!st) return st;
        if (!d.IsObject()) return Status::badRequest("the patched object is not a JSON object");
        if (isApply || ct != "application/json-patch+json") {
          // A patch that does not mention resourceVersion is unconditional.
          const JsonValue* prv = kube::find(*patch, {"metadata", "resourceVersion"});
          if (prv == nullptr) setRv(d, std::stoll(kube::resourceVersion(*cur)));
        }
        return d;
      },
      &created);
  if (!res) {
    c.fail(res.status());
    return;
  }
  c.ok(created ? 201 : 200, res->json ? *res->json : statusJson(Status::ok()));
}

StatusOr<Entry> Api::remove(const ResourceTypePtr& rt, const std::string& ns,
                            const std::string& name, const DeleteOptions& opts) {
  bool deletedNow = false;
  auto res = storage_.mutate(rt->key(ns, name), [&](const Entry* cur, int64_t newRv) -> StatusOr<Mutation> {
    if (cur == nullptr) return notFound(*rt, name);
    auto doc = kube::parseJson(*cur->json);
    if (!doc) return Status::internal("stored object is corrupt");
    if (!opts.preconditionUid.empty() && opts.preconditionUid != kube::uid(*doc)) {
      return Status::conflict("Operation cannot be fulfilled on " + qualifiedResource(*rt) + " \"" +
                              name + "\": Precondition failed: UID in precondition: " +
                              opts.preconditionUid + ", UID in object meta: " + kube::uid(*doc));
    }
    if (!opts.preconditionRv.empty() && opts.preconditionRv != kube::resourceVersion(*doc)) {
      return Status::conflict("Operation cannot be fulfilled on " + qualifiedResource(*rt) + " \"" +
                              name + "\": Precondition failed: ResourceVersion in precondition: " +
                              opts.preconditionRv + ", ResourceVersion in object meta: " +
                              kube::resourceVersion(*doc));
    }
    bool alreadyDeleting = kube::find(*doc, {"metadata", "deletionTimestamp"}) != nullptr;
    std::string policy = opts.propagationPolicy;
    bool needsFinalizer = finalizerCount(*doc) > 0 || policy == "Foreground" || policy == "Orphan" ||
                          rt->kind == "Namespace";
    if (!needsFinalizer) {
      deletedNow = true;
      if (opts.dryRun) return Mutation::noChange();
      return Mutation::remove(deletedEventText(*cur, newRv));
    }
    if (opts.dryRun) return Mutation::noChange();
    auto& a = doc->GetAllocator();
    if (policy == "Foreground") addFinalizer(*doc, "foregroundDeletion");
    if (policy == "Orphan") addFinalizer(*doc, "orphan");
    JsonValue& md = kube::ensureObject(*doc, "metadata", a);
    if (!alreadyDeleting) {
      kube::setString(md, "deletionTimestamp", kube::nowTime(), a);
      kube::setMember(md, "deletionGracePeriodSeconds", JsonValue(0), a);
    }
    if (rt->kind == "Namespace") {
      kube::setString(kube::ensureObject(*doc, "status", a), "phase", "Terminating", a);
    }
    Json before = kube::parseJson(*cur->json).value();
    if (*doc == before) return Mutation::noChange();
    setRv(*doc, newRv);
    return Mutation::write(kube::toJson(*doc));
  });
  if (!res) return res;
  if (!opts.dryRun) afterWrite(rt, *res, deletedNow);
  if (deletedNow && rt->kind == "CustomResourceDefinition") registry_.removeCrd(name);
  if (deletedNow) return Entry{res->rv, nullptr};
  return res;
}

namespace {
StatusOr<DeleteOptions> parseDeleteOptions(const std::string& body,
                                           const std::map<std::string, std::string>& query) {
  DeleteOptions o;
  if (auto it = query.find("propagationPolicy"); it != query.end()) o.propagationPolicy = it->second;
  if (auto it = query.find("dryRun"); it != query.end()) o.dryRun = it->second == "All";
  if (!body.empty()) {
    auto d = kube::parseJson(body);
    if (!d) return d.status();
    if (!d->IsObject()) return Status::badRequest("DeleteOptions must be a JSON object");
    std::string p = kube::getString(*d, {"propagationPolicy"});
    if (!p.empty()) o.propagationPolicy = p;
    if (const JsonValue* orphan = kube::find(*d, {"orphanDependents"}); orphan && orphan->IsBool()) {
      o.propagationPolicy = orphan->GetBool() ? "Orphan" : "Background";
    }
    o.preconditionUid = kube::getString(*d, {"preconditions", "uid"});
    o.preconditionRv = kube::getString(*d, {"preconditions", "resourceVersion"});
    if (const JsonValue* dr = kube::find(*d, {"dryRun"}); dr && dr->IsArray() && !dr->Empty()) {
      o.dryRun = true;
    }
  }
  if (!o.propagationPolicy.empty() && o.propagationPolicy != "Background" &&
      o.propagationPolicy != "Foreground" && o.propagationPolicy != "Orphan") {
    return Status::badRequest("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"" +
                              o.propagationPolicy + "\": supported values: \"Foreground\", \"Background\", \"Orphan\"");
  }
  return o;
}
}  // namespace

void Api::serveDelete(Call& c) {
  if (!c.ri.subresource.empty()) {
    c.fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
    return;
  }
  auto opts = parseDeleteOptions(c.body, c.query);
  if (!opts) {
    c.fail(opts.status());
    return;
  }
  auto before = storage_.get(c.rt->key(c.ri.ns, c.ri.name));
  auto res = remove(c.rt, c.ri.ns, c.ri.name, *opts);
  if (!res) {
    c.fail(res.status());
    return;
  }
  if (res->json) {
    c.ok(200, *res->json);  // deletion pending on finalizers: the object with deletionTimestamp
    return;
  }
  if (!c.rt->builtin || c.rt->kind == "Namespace") {
    c.ok(200, before ? *before->json : "{}");  // custom resources return the deleted object
    return;
  }
  std::string uid;
  if (before) {
    auto d = kube::parseJson(*before->json);
    if (d) uid = kube::uid(*d);
  }
  c.ok(200, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Success\","
            "\"details\":{\"name\":\"" + c.ri.name + "\",\"group\":\"" + c.rt->group +
            "\",\"kind\":\"" + c.rt->resource + "\",\"uid\":\"" + uid + "\"}}");
}

void Api::serveDeleteCollection(Call& c) {
  auto opts = parseDeleteOptions(c.body, c.query);
  if (!opts) {
    c.fail(opts.status());
    return;
  }
  auto sel = Selectors::parse(c.param("labelSelector"), c.param("fieldSelector"), *c.rt);
  if (!sel) {
    c.fail(sel.status());
    return;
  }
  std::string prefix = c.rt->keyPrefix() + (c.rt->namespaced ? c.ri.ns + "/" : "");
  std::vector<std::string> items;
  for (auto& [key, entry] : storage_.list(prefix)) {
    if (!sel->empty() && !sel->matches(*entry.json)) continue;
    auto doc = kube::parseJson(*entry.json);
    if (!doc) continue;
    auto r = remove(c.rt, kube::ns(*doc), kube::name(*doc), *opts);
    if (r && r->json) items.push_back(*r->json);
  }
  std::string out = "{\"kind\":\"" + c.rt->listKind + "\",\"apiVersion\":\"" +
                    c.rt->groupVersion() + "\",\"metadata\":{\"resourceVersion\":\"" +
                    rvString(storage_.currentRv()) + "\"},\"items\":[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + items[i];
  c.ok(200, out + "]}");
}

void Api::serveScale(Call& c) {
  auto toPath = [](const std::string& jp) {
    std::vector<std::string> parts;
    size_t pos = 1;
    while (pos <= jp.size()) {
      size_t dot = jp.find('.', pos);
      if (dot == std::string::npos) dot = jp.size();
      parts.push_back(jp.substr(pos, dot - pos));
      pos = dot + 1;
    }
    return parts;
  };
  auto getAt = [&](const JsonValue& obj, const std::string& jp) -> const JsonValue* {
    const JsonValue* cur = &obj;
    for (const auto& p : toPath(jp)) {
      if (!cur->IsObject()) return nullptr;
      auto it = cur->FindMember(p.c_str());
      if (it == cur->MemberEnd()) return nullptr;
      cur = &it->value;
    }
    return cur;
  };
  auto renderScale = [&](const Json& obj) {
    Json s(rapidjson::kObjectType);
    auto& a = s.GetAllocator();
    kube::setString(s, "kind", "Scale", a);
    kube::setString(s, "apiVersion", "autoscaling/v1", a);
    JsonValue md(rapidjson::kObjectType);
    kube::setString(md, "name", kube::name(obj), a);
    if (!kube::ns(obj).empty()) kube::setString(md, "namespace", kube::ns(obj), a);
    kube::setString(md, "uid", kube::uid(obj), a);
    kube::setString(md, "resourceVersion", kube::resourceVersion(obj), a);
    s.AddMember("metadata", std::move(md), a);
    JsonValue spec(rapidjson::kObjectType);
    const JsonValue* r = getAt(obj, c.rt->specReplicasPath);
    spec.AddMember("replicas", r && r->IsInt64() ? r->GetInt64() : 0, a);
    s.AddMember("spec", std::move(spec), a);
    JsonValue status(rapidjson::kObjectType);
    const JsonValue* sr = getAt(obj, c.rt->statusReplicasPath);
    status.AddMember("replicas", sr && sr->IsInt64() ? sr->GetInt64() : 0, a);
    if (!c.rt->labelSelectorPath.empty()) {
      const JsonValue* ls = getAt(obj, c.rt->labelSelectorPath);
      if (ls && ls->IsString()) kube::setString(status, "selector", kube::view(*ls), a);
    }
    s.AddMember("status", std::move(status), a);
    return kube::toJson(s);
  };
  if (c.ri.verb == "get") {
    auto e = storage_.get(c.rt->key(c.ri.ns, c.ri.name));
    if (!e) {
      c.fail(notFound(*c.rt, c.ri.name));
      return;
    }
    c.ok(200, renderScale(kube::parseJson(*e->json).value()));
    return;
  }
  if (c.ri.verb != "update" && c.ri.verb != "patch") {
    c.fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
    return;
  }
  auto body = kube::parseJson(c.body);
  if (!body) {
    c.fail(body.status());
    return;
  }
  auto res = writeUpdate(c.rt, c.ri.ns, c.ri.name, "", c.param("fieldManager"), "Ignore", false, false,
                         [&](const Json* cur) -> StatusOr<Json> {
                           Json scale = kube::cloneJson(*cur);
                           const JsonValue* r = kube::find(*body, {"spec", "replicas"});
                           if (r == nullptr || !r->IsInt64() || r->GetInt64() < 0) {
                             return Status::invalid("Scale \"" + c.ri.name + "\" is invalid: spec.replicas: Invalid value: must be a non-negative integer");
                           }
                           JsonValue* target = &scale;
                           auto parts = toPath(c.rt->specReplicasPath);
                           for (size_t i = 0; i < parts.size(); ++i) {
                             if (i + 1 == parts.size()) {
                               kube::setMember(*target, parts[i], JsonValue(r->GetInt64()), scale.GetAllocator());
                             } else {
                               target = &kube::ensureObject(*target, parts[i], scale.GetAllocator());
                             }
                           }
                           return scale;
                         });
  if (!res) {
    c.fail(res.status());
    return;
  }
  c.ok(200, renderScale(kube::parseJson(*res->json).value()));
}

}  // namespace apiserver

namespace apiserver {

// authentication.k8s.io/v1 TokenReview, as kube-apiserver answers it: 201 with the request's spec
// and a status saying whether spec.token authenticates and as whom. Nothing is stored. Foxden's
// tokens are not bound to audiences: requested audiences are echoed back as satisfied.
void Api::serveTokenReview(Call& c) {
  if (c.ri.verb != "create" || !c.ri.subresource.empty() || !c.ri.name.empty()) {
    c.fail(Status::methodNotAllowed("the server does not allow this method on the requested resource"));
    return;
  }
  if (!c.ri.ns.empty()) {
    c.fail(Status::badRequest("the namespace of the provided object does not match the namespace sent on the request"));
    return;
  }
  if (Status st = auth_.authorize(c.id, c.ri); !st) {
    c.fail(st);
    return;
  }
  if (mediaType(c.req.header("content-type")) == "application/vnd.kubernetes.protobuf") {
    c.fail(Status::unsupportedMediaType("TokenReview accepts JSON bodies only"));
    return;
  }
  auto doc = kube::parseJson(c.body);
  if (!doc || !doc->IsObject()) {
    c.fail(Status::badRequest("the body of the request was in an unknown format: " +
                              (doc ? std::string("expected an object") : doc.status().message())));
    return;
  }
  std::string apiVersion = kube::getString(*doc, {"apiVersion"});
  std::string kind = kube::getString(*doc, {"kind"});
  if ((!apiVersion.empty() && apiVersion != "authentication.k8s.io/v1") || (!kind.empty() && kind != "TokenReview")) {
    c.fail(Status::badRequest("expected authentication.k8s.io/v1 TokenReview, got " + apiVersion + " " + kind));
    return;
  }
  const kube::JsonValue* token = kube::find(*doc, {"spec", "token"});
  if (token == nullptr || !token->IsString() || token->GetStringLength() == 0) {
    c.fail(Status::badRequest("token is required for TokenReview in authentication"));
    return;
  }
  const kube::JsonValue* audiences = kube::find(*doc, {"spec", "audiences"});
  if (audiences != nullptr && !audiences->IsNull() && !audiences->IsArray()) {
    c.fail(Status::badRequest("spec.audiences: must be a list of strings"));
    return;
  }
  auto who = auth_.authenticate("Bearer " + std::string(kube::view(*token)));
  Json out(rapidjson::kObjectType);
  auto& a = out.GetAllocator();
  kube::setString(out, "kind", "TokenReview", a);
  kube::setString(out, "apiVersion", "authentication.k8s.io/v1", a);
  Json meta(rapidjson::kObjectType);
  meta.AddMember("creationTimestamp", JsonValue(rapidjson::kNullType), a);
  out.AddMember("metadata", JsonValue(meta, a), a);
  JsonValue spec(rapidjson::kObjectType);
  kube::setString(spec, "token", std::string(kube::view(*token)), a);
  if (audiences != nullptr && audiences->IsArray()) spec.AddMember("audiences", JsonValue(*audiences, a), a);
  out.AddMember("spec", std::move(spec), a);
  JsonValue status(rapidjson::kObjectType);
  JsonValue user(rapidjson::kObjectType);
  if (who) {
    status.AddMember("authenticated", true, a);
    kube::setString(user, "username", who->user, a);
    JsonValue groups(rapidjson::kArrayType);
    for (const auto& g : who->groups()) groups.PushBack(kube::str(g, a), a);
    user.AddMember("groups", std::move(groups), a);
  }
  status.AddMember("user", std::move(user), a);
  if (who && audiences != nullptr && audiences->IsArray()) status.AddMember("audiences", JsonValue(*audiences, a), a);
  out.AddMember("status", std::move(status), a);
  c.ok(201, kube::toJson(out));
}

}  // namespace apiserver
