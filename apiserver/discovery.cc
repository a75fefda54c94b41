#include "apiserver/discovery.h"

#include <algorithm>

#include "apiserver/api.h"
#include "apiserver/request.h"
#include "kube/json.h"
#include "kube/kubeconfig.h"

namespace apiserver {

using kube::Json;
using kube::JsonValue;

namespace {

constexpr const char* kVerbs[] = {"create", "delete", "deletecollection", "get",
                                  "list",   "patch",  "update",           "watch"};

JsonValue strArray(const std::vector<std::string>& v, kube::JsonAlloc& a) {
  JsonValue arr(rapidjson::kArrayType);
  for (const auto& s : v) arr.PushBack(kube::str(s, a), a);
  return arr;
}

JsonValue resourceEntry(const ResourceType& rt, const std::string& name, const std::string& kind,
                        const std::vector<std::string>& verbs, kube::JsonAlloc& a, bool main) {
  JsonValue r(rapidjson::kObjectType);
  kube::setString(r, "name", name, a);
  kube::setString(r, "singularName", main ? rt.singular : "", a);
  r.AddMember("namespaced", rt.namespaced, a);
  if (!main && name.find("/scale") != std::string::npos) {
    kube::setString(r, "group", "autoscaling", a);
    kube::setString(r, "version", "v1", a);
  }
  kube::setString(r, "kind", kind, a);
  r.AddMember("verbs", strArray(verbs, a), a);
  if (main && !rt.shortNames.empty()) r.AddMember("shortNames", strArray(rt.shortNames, a), a);
  if (main && !rt.categories.empty()) r.AddMember("categories", strArray(rt.categories, a), a);
  if (main) kube::setString(r, "storageVersionHash", "", a);
  return r;
}

std::string resourceList(const Registry& reg, const std::string& group, const std::string& version) {
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "kind", "APIResourceList", a);
  kube::setString(d, "apiVersion", "v1", a);
  kube::setString(d, "groupVersion", group.empty() ? version : group + "/" + version, a);
  JsonValue list(rapidjson::kArrayType);
  for (const auto& rt : reg.all()) {
    if (rt->group != group || rt->version != version) continue;
    list.PushBack(resourceEntry(*rt, rt->resource, rt->kind,
                                !rt->verbs.empty() ? rt->verbs
                                                   : std::vector<std::string>(std::begin(kVerbs), std::end(kVerbs)),
                                a, true),
                  a);
    if (rt->statusSubresource) {
      list.PushBack(resourceEntry(*rt, rt->resource + "/status", rt->kind, {"get", "patch", "update"}, a, false), a);
    }
    if (rt->scaleSubresource) {
      list.PushBack(resourceEntry(*rt, rt->resource + "/scale", "Scale", {"get", "patch", "update"}, a, false), a);
    }
    if (rt->kind == "Namespace") {
      list.PushBack(resourceEntry(*rt, "namespaces/finalize", "Namespace", {"update"}, a, false), a);
    }
  }
  d.AddMember("resources", std::move(list), a);
  return kube::toJson(d);
}

JsonValue groupEntry(const std::string& name, const std::vector<std::string>& versions,
                     kube::JsonAlloc& a) {
  JsonValue g(rapidjson::kObjectType);
  kube::setString(g, "name", name, a);
  JsonValue vs(rapidjson::kArrayType);
  for (const auto& v : versions) {
    JsonValue e(rapidjson::kObjectType);
    kube::setString(e, "groupVersion", name + "/" + v, a);
    kube::setString(e, "version", v, a);
    vs.PushBack(std::move(e), a);
  }
  g.AddMember("versions", std::move(vs), a);
  JsonValue pref(rapidjson::kObjectType);
  kube::setString(pref, "groupVersion", name + "/" + versions.front(), a);
  kube::setString(pref, "version", versions.front(), a);
  g.AddMember("preferredVersion", std::move(pref), a);
  return g;
}

// --- OpenAPI v3 -------------------------------------------------------------------------------

std::string reverseDomain(const std::string& group) {
  if (group.empty()) return "io.k8s.api.core";
  std::vector<std::string> parts;
  size_t pos = 0;
  while (pos <= group.size()) {
    size_t dot = group.find('.', pos);
    if (dot == std::string::npos) dot = group.size();
    parts.push_back(group.substr(pos, dot - pos));
    pos = dot + 1;
  }
  std::reverse(parts.begin(), parts.end());
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? "." : "") + parts[i];
  if (group.find('.') != std::string::npos && group.find("k8s.io") != std::string::npos) {
    // coordination.k8s.io -> io.k8s.api.coordination, as upstream names them
    return "io.k8s.api." + group.substr(0, group.find('.'));
  }
  return out;
}

std::string schemaName(const ResourceType& rt) {
  return reverseDomain(rt.group) + "." + rt.version + "." + rt.kind;
}

constexpr const char* kObjectMetaRef = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

const char* kObjectMetaSchema = R"({"description":"ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.","type":"object","properties":{
"name":{"description":"Name must be unique within a namespace.","type":"string"},
"generateName":{"description":"GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided.","type":"string"},
"namespace":{"description":"Namespace defines the space within which each name must be unique.","type":"string"},
"labels":{"description":"Map of string keys and values that can be used to organize and categorize (scope and select) objects.","type":"object","additionalProperties":{"type":"string","default":""}},
"annotations":{"description":"Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata.","type":"object","additionalProperties":{"type":"string","default":""}},
"uid":{"description":"UID is the unique in time and space value for this object.","type":"string"},
"resourceVersion":{"description":"An opaque value that represents the internal version of this object.","type":"string"},
"generation":{"description":"A sequence number representing a specific generation of the desired state.","type":"integer","format":"int64"},
"creationTimestamp":{"description":"CreationTimestamp is a timestamp representing the server time when this object was created.","type":"string","format":"date-time"},
"deletionTimestamp":{"description":"DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted.","type":"string","format":"date-time"},
"deletionGracePeriodSeconds":{"description":"Number of seconds allowed for this object to gracefully terminate.","type":"integer","format":"int64"},
"finalizers":{"description":"Must be empty before the object is deleted from the registry.","type":"array","items":{"type":"string","default":""},"x-kubernetes-list-type":"set"},
"ownerReferences":{"description":"List of objects depended by this object.","type":"array","items":{"type":"object","required":["apiVersion","kind","name","uid"],"properties":{"apiVersion":{"type":"string"},"kind":{"type":"string"},"name":{"type":"string"},"uid":{"type":"string"},"controller":{"type":"boolean"},"blockOwnerDeletion":{"type":"boolean"}}}},
"managedFields":{"description":"ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow.","type":"array","items":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}})";

// Compact schemas for the built-in kinds: enough for `kubectl explain` and apply's validation.
const char* builtinSchema(const std::string& kind) {
  if (kind == "ConfigMap") {
    return R"({"description":"ConfigMap holds configuration data for pods to consume.","type":"object","properties":{
"data":{"description":"Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.","type":"object","additionalProperties":{"type":"string","default":""}},
"binaryData":{"description":"BinaryData contains the binary data, base64-encoded.","type":"object","additionalProperties":{"type":"string","format":"byte"}},
"immutable":{"description":"Immutable, if set to true, ensures that data stored in the ConfigMap cannot be updated.","type":"boolean"}}})";
  }
  if (kind == "Secret") {
    return R"({"description":"Secret holds secret data of a certain type.","type":"object","properties":{
"data":{"description":"Data contains the secret data, base64-encoded.","type":"object","additionalProperties":{"type":"string","format":"byte"}},
"stringData":{"description":"stringData allows specifying non-binary secret data in string form. It is never output when reading from the API.","type":"object","additionalProperties":{"type":"string","default":""}},
"type":{"description":"Used to facilitate programmatic handling of secret data.","type":"string"},
"immutable":{"description":"Immutable, if set to true, ensures that data stored in the Secret cannot be updated.","type":"boolean"}}})";
  }
  if (kind == "Namespace") {
    return R"({"description":"Namespace provides a scope for Names.","type":"object","properties":{
"spec":{"description":"Spec defines the behavior of the Namespace.","type":"object","properties":{"finalizers":{"description":"Finalizers is an opaque list of values that must be empty to permanently remove object from storage.","type":"array","items":{"type":"string","default":""}}}},
"status":{"description":"Status describes the current status of a Namespace.","type":"object","properties":{"phase":{"description":"Phase is the current lifecycle phase of the namespace.","type":"string","enum":["Active","Terminating"]}}}}})";
  }
  if (kind == "Service") {
    return R"({"description":"Service is a named abstraction of software service consisting of local port that the proxy listens on, and the selector that determines which pods will answer requests sent through the proxy.","type":"object","properties":{
"spec":{"description":"Spec defines the behavior of a service.","type":"object","properties":{"type":{"type":"string","description":"type determines how the Service is exposed."},"selector":{"type":"object","additionalProperties":{"type":"string"}},"clusterIP":{"type":"string"},"externalIPs":{"type":"array","items":{"type":"string"}},"ports":{"type":"array","x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["port","protocol"],"items":{"type":"object","properties":{"name":{"type":"string"},"port":{"type":"integer","format":"int32"},"protocol":{"type":"string"},"targetPort":{"x-kubernetes-int-or-string":true},"nodePort":{"type":"integer","format":"int32"}}}}}},
"status":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}})";
  }
  if (kind == "Lease") {
    return R"({"description":"Lease defines a lease concept.","type":"object","properties":{
"spec":{"description":"spec contains the specification of the Lease.","type":"object","properties":{"holderIdentity":{"type":"string"},"leaseDurationSeconds":{"type":"integer","format":"int32"},"acquireTime":{"type":"string","format":"date-time"},"renewTime":{"type":"string","format":"date-time"},"leaseTransitions":{"type":"integer","format":"int32"}}}}})";
  }
  if (kind == "Event") {
    return R"({"description":"Event is a report of an event somewhere in the cluster.","type":"object","properties":{
"involvedObject":{"type":"object","properties":{"apiVersion":{"type":"string"},"kind":{"type":"string"},"name":{"type":"string"},"namespace":{"type":"string"},"uid":{"type":"string"},"resourceVersion":{"type":"string"},"fieldPath":{"type":"string"}}},
"reason":{"type":"string"},"message":{"type":"string"},"type":{"type":"string"},"count":{"type":"integer","format":"int32"},
"source":{"type":"object","properties":{"component":{"type":"string"},"host":{"type":"string"}}},
"firstTimestamp":{"type":"string","format":"date-time"},"lastTimestamp":{"type":"string","format":"date-time"},"eventTime":{"type":"string","format":"date-time"},
"reportingComponent":{"type":"string"},"reportingInstance":{"type":"string"},"action":{"type":"string"}}})";
  }
  if (kind == "EndpointSlice") {
    return R"({"description":"EndpointSlice represents a subset of the endpoints that implement a service.","type":"object","properties":{
"addressType":{"type":"string"},"endpoints":{"type":"array","items":{"type":"object","x-kubernetes-preserve-unknown-fields":true}},"ports":{"type":"array","items":{"type":"object","properties":{"name":{"type":"string"},"port":{"type":"integer","format":"int32"},"protocol":{"type":"string"},"appProtocol":{"type":"string"}}}}}})";
  }
  return R"({"description":"CustomResourceDefinition represents a resource that should be exposed on the API server.","type":"object","properties":{"spec":{"type":"object","x-kubernetes-preserve-unknown-fields":true},"status":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}})";
}

std::string openApiDoc(const Registry& reg, const std::string& group, const std::string& version) {
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "openapi", "3.0.0", a);
  JsonValue info(rapidjson::kObjectType);
  kube::setString(info, "title", "Foxden", a);
  kube::setString(info, "version", "v1.32.0", a);
  d.AddMember("info", std::move(info), a);
  JsonValue paths(rapidjson::kObjectType);
  JsonValue schemas(rapidjson::kObjectType);
  Json meta;
  meta.Parse(kObjectMetaSchema);
  schemas.AddMember(kube::str(kObjectMetaRef, a), JsonValue(meta, a), a);
  bool any = false;
  for (const auto& rt : reg.all()) {
    if (rt->group != group || rt->version != version) continue;
    any = true;
    Json schema;
    if (rt->schema) {
      schema.CopyFrom(*rt->schema, schema.GetAllocator());
    } else {
      schema.Parse(builtinSchema(rt->kind));
    }
    if (!schema.IsObject()) schema.SetObject();
    auto& sa = schema.GetAllocator();
    JsonValue& props = kube::ensureObject(schema, "properties", sa);
    Json apiVersion;
    apiVersion.Parse(R"({"description":"APIVersion defines the versioned schema of this representation of an object.","type":"string"})");
    kube::setMember(props, "apiVersion", JsonValue(apiVersion, sa), sa);
    Json kind;
    kind.Parse(R"({"description":"Kind is a string value representing the REST resource this object represents.","type":"string"})");
    kube::setMember(props, "kind", JsonValue(kind, sa), sa);
    Json metaRef;
    metaRef.Parse((std::string(R"({"description":"Standard object's metadata.","allOf":[{"$ref":"#/components/schemas/)") +
                   kObjectMetaRef + "\"}]}").c_str());
    kube::setMember(props, "metadata", JsonValue(metaRef, sa), sa);
    JsonValue gvk(rapidjson::kArrayType);
    JsonValue gvkItem(rapidjson::kObjectType);
    kube::setString(gvkItem, "group", rt->group, sa);
    kube::setString(gvkItem, "version", rt->version, sa);
    kube::setString(gvkItem, "kind", rt->kind, sa);
    gvk.PushBack(std::move(gvkItem), sa);
    kube::setMember(schema, "x-kubernetes-group-version-kind", std::move(gvk), sa);
    std::string sname = schemaName(*rt);
    schemas.AddMember(kube::str(sname, a), JsonValue(schema, a), a);

    std::string base = rt->group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
    std::string item = base + (rt->namespaced ? "/namespaces/{namespace}/" : "/") + rt->resource + "/{name}";
    Json op;
    std::string contents = R"("application/json-patch+json":{"schema":{"type":"object"}},"application/merge-patch+json":{"schema":{"type":"object"}},"application/apply-patch+yaml":{"schema":{"type":"object"}})";
    if (rt->builtin && rt->kind != "CustomResourceDefinition") {
      contents += R"(,"application/strategic-merge-patch+json":{"schema":{"type":"object"}})";
    }
    std::string ref = "#/components/schemas/" + sname;
    std::string opText = std::string(R"({"get":{"x-kubernetes-action":"get","x-kubernetes-group-version-kind":{"group":")") +
        rt->group + R"(","version":")" + version + R"(","kind":")" + rt->kind +
        R"("},"responses":{"200":{"description":"OK","content":{"application/json":{"schema":{"$ref":")" + ref +
        R"("}}}}}},"patch":{"x-kubernetes-action":"patch","x-kubernetes-group-version-kind":{"group":")" + rt->group +
        R"(","version":")" + version + R"(","kind":")" + rt->kind +
        R"("},"parameters":[{"name":"fieldValidation","in":"query","schema":{"type":"string"}},{"name":"fieldManager","in":"query","schema":{"type":"string"}},{"name":"dryRun","in":"query","schema":{"type":"string"}},{"name":"force","in":"query","schema":{"type":"boolean"}}],"requestBody":{"content":{)" +
        contents + R"(}},"responses":{"200":{"description":"OK","content":{"application/json":{"schema":{"$ref":")" + ref +
        R"("}}}}}}})";
    op.Parse(opText.c_str());
    if (!op.HasParseError()) paths.AddMember(kube::str(item, a), JsonValue(op, a), a);
  }
  (void)any;
  d.AddMember("paths", std::move(paths), a);
  JsonValue components(rapidjson::kObjectType);
  components.AddMember("schemas", std::move(schemas), a);
  d.AddMember("components", std::move(components), a);
  return kube::toJson(d);
}

}  // namespace

std::string versionJson(const std::string& gitVersion) {
  // "v1.32.0" -> major 1, minor 32
  std::string minor = "32";
  size_t d1 = gitVersion.find('.');
  if (d1 != std::string::npos) {
    size_t d2 = gitVersion.find('.', d1 + 1);
    minor = gitVersion.substr(d1 + 1, d2 == std::string::npos ? std::string::npos : d2 - d1 - 1);
  }
  return R"({"major":"1","minor":")" + minor + R"(","gitVersion":")" + gitVersion +
         R"(","gitCommit":"foxden","gitTreeState":"clean","buildDate":"2026-11-22T00:00:00Z","goVersion":"n/a","compiler":"g++","platform":"linux/amd64"})";
}

kube::StatusOr<std::string> serveDiscovery(const Registry& reg, const std::string& rawPath,
                                           const std::string& accept, const ApiOptions& options,
                                           std::string& contentType) {
  (void)accept;
  contentType = "application/json";
  std::string path = rawPath;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  auto groups = reg.groups();
  auto notFound = [] {
    return kube::Status::notFound("the server could not find the requested resource");
  };
  if (path == "/api") {
    std::string addr = options.externalAddress.empty() ? "127.0.0.1:6443" : options.externalAddress;
    return std::string(R"({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":")") +
           addr + "\"}]}";
  }
  if (path == "/api/v1") return resourceList(reg, "", "v1");
  if (path == "/apis") {
    Json d(rapidjson::kObjectType);
    auto& a = d.GetAllocator();
    kube::setString(d, "kind", "APIGroupList", a);
    kube::setString(d, "apiVersion", "v1", a);
    JsonValue list(rapidjson::kArrayType);
    for (const auto& [g, versions] : groups) {
      if (g.empty()) continue;
      list.PushBack(groupEntry(g, versions, a), a);
    }
    d.AddMember("groups", std::move(list), a);
    return kube::toJson(d);
  }
  if (path.rfind("/apis/", 0) == 0) {
    std::string rest = path.substr(6);
    size_t slash = rest.find('/');
    std::string g = rest.substr(0, slash);
    auto it = groups.find(g);
    if (it == groups.end() || g.empty()) return notFound();
    if (slash == std::string::npos) {
      Json d(rapidjson::kObjectType);
      auto& a = d.GetAllocator();
      JsonValue ge = groupEntry(g, it->second, a);
      kube::setString(ge, "kind", "APIGroup", a);
      kube::setString(ge, "apiVersion", "v1", a);
      return kube::toJson(ge);
    }
    std::string v = rest.substr(slash + 1);
    if (std::find(it->second.begin(), it->second.end(), v) == it->second.end()) return notFound();
    return resourceList(reg, g, v);
  }
  if (path == "/openapi/v3") {
    Json d(rapidjson::kObjectType);
    auto& a = d.GetAllocator();
    JsonValue paths(rapidjson::kObjectType);
    std::string hash = std::to_string(reg.generation());
    for (const auto& [g, versions] : groups) {
      for (const auto& v : versions) {
        std::string key = g.empty() ? "api/" + v : "apis/" + g + "/" + v;
        JsonValue e(rapidjson::kObjectType);
        kube::setString(e, "serverRelativeURL", "/openapi/v3/" + key + "?hash=" + hash, a);
        paths.AddMember(kube::str(key, a), std::move(e), a);
      }
    }
    d.AddMember("paths", std::move(paths), a);
    return kube::toJson(d);
  }
  if (path == "/openapi/v2") {
    // kubectl 1.27 and 1.28 validate with OpenAPI v2, which they read only as gnostic protobuf.
    // An empty document (swagger "2.0" and info) means "no client-side models": kubectl then
    // leaves validation to the server (fieldValidation), where the CRD schemas are enforced.
    auto field = [](int num, const std::string& bytes) {
      std::string out(1, static_cast<char>((num << 3) | 2));
      out.push_back(static_cast<char>(bytes.size()));  // all short (< 128 bytes)
      return out + bytes;
    };
    contentType = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
    return field(1, "2.0") + field(2, field(1, "Foxden") + field(2, options.version));
  }
  if (path.rfind("/openapi/v3/", 0) == 0) {
    std::string key = path.substr(12);
    if (key == "api/v1") return openApiDoc(reg, "", "v1");
    if (key.rfind("apis/", 0) == 0) {
      std::string rest = key.substr(5);
      size_t slash = rest.find('/');
      if (slash == std::string::npos) return notFound();
      std::string g = rest.substr(0, slash);
      std::string v = rest.substr(slash + 1);
      auto it = groups.find(g);
      if (it == groups.end() ||
          std::find(it->second.begin(), it->second.end(), v) == it->second.end()) {
        return notFound();
      }
      return openApiDoc(reg, g, v);
    }
  }
  return notFound();
}

std::string renderForVersion(const std::string& stored, const ResourceType& rt) {
  std::string want = "\"apiVersion\":\"" + rt.groupVersion() + "\"";
  if (stored.find(want) != std::string::npos) return stored;
  auto d = kube::parseJson(stored);
  if (!d || !d->IsObject()) return stored;
  kube::setString(*d, "apiVersion", rt.groupVersion(), d->GetAllocator());
  return kube::toJson(*d);
}

std::string encodeContinue(int64_t rv, const std::string& lastKey) {
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "v", "meta.k8s.io/v1", a);
  d.AddMember("rv", rv, a);
  kube::setString(d, "start", lastKey, a);
  std::string b = kube::base64Encode(kube::toJson(d));
  for (auto& ch : b) {
    if (ch == '+') ch = '-';
    if (ch == '/') ch = '_';
  }
  return b;
}

kube::StatusOr<std::pair<int64_t, std::string>> decodeContinue(const std::string& token) {
  std::string b = token;
  for (auto& ch : b) {
    if (ch == '-') ch = '+';
    if (ch == '_') ch = '/';
  }
  auto bad = [] { return kube::Status::badRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"); };
  auto text = kube::base64Decode(b);
  if (!text) return bad();
  auto d = kube::parseJson(*text);
  if (!d || !d->IsObject()) return bad();
  auto rv = kube::getInt(*d, {"rv"});
  std::string start = kube::getString(*d, {"start"});
  if (!rv || start.empty()) return bad();
  return std::make_pair(*rv, start);
}

}  // namespace apiserver
