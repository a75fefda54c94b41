#include "apiserver/printers.h"

#include <functional>

#include "apiserver/table.h"
#include "kube/json.h"
#include "kube/timeutil.h"

namespace apiserver {

using kube::Json;
using kube::JsonValue;

namespace {

struct Column {
  std::string name;
  std::string type;
  std::string format;
  std::string description;
  int priority = 0;
};

using CellFn = std::function<JsonValue(const JsonValue& obj, kube::JsonAlloc& a, kube::TimePoint now)>;

JsonValue age(const JsonValue& obj, kube::JsonAlloc& a, kube::TimePoint now) {
  return kube::str(translateTimestampSince(kube::find(obj, {"metadata", "creationTimestamp"}), now), a);
}

JsonValue strCell(const JsonValue& obj, std::initializer_list<std::string_view> path,
                  kube::JsonAlloc& a, const char* def = "<none>") {
  std::string s = kube::getString(obj, path);
  return kube::str(s.empty() ? def : s, a);
}

int64_t countMembers(const JsonValue* v) {
  return v != nullptr && v->IsObject() ? static_cast<int64_t>(v->MemberCount()) : 0;
}

// The columns kube-apiserver prints for the built-in kinds Foxden stores.
bool builtinColumns(const ResourceType& rt, std::vector<Column>& cols, std::vector<CellFn>& cells) {
  const std::string nameDesc = "Name must be unique within a namespace.";
  auto name = [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) {
    return kube::str(kube::name(o), a);
  };
  if (!rt.builtin) return false;
  if (rt.kind == "ConfigMap") {
    cols = {{"Name", "string", "name", nameDesc}, {"Data", "string", "", "Data contains the configuration data."}, {"Age", "string", "", "CreationTimestamp"}};
    cells = {name,
             [](const JsonValue& o, kube::JsonAlloc&, kube::TimePoint) {
               return JsonValue(countMembers(kube::find(o, {"data"})) + countMembers(kube::find(o, {"binaryData"})));
             },
             age};
  } else if (rt.kind == "Secret") {
    cols = {{"Name", "string", "name", nameDesc}, {"Type", "string", "", "The type of the secret"}, {"Data", "string", "", "The number of entries"}, {"Age", "string", "", "CreationTimestamp"}};
    cells = {name, [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"type"}, a); },
             [](const JsonValue& o, kube::JsonAlloc&, kube::TimePoint) { return JsonValue(countMembers(kube::find(o, {"data"}))); },
             age};
  } else if (rt.kind == "Namespace") {
    cols = {{"Name", "string", "name", nameDesc}, {"Status", "string", "", "The status of the namespace"}, {"Age", "string", "", "CreationTimestamp"}};
    cells = {name, [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"status", "phase"}, a, "Active"); }, age};
  } else if (rt.kind == "Service") {
    cols = {{"Name", "string", "name", nameDesc}, {"Type", "string", "", "The type of service"}, {"Cluster-IP", "string", "", "Cluster IP"}, {"External-IP", "string", "", "External IPs"}, {"Port(s)", "string", "", "Ports"}, {"Age", "string", "", "CreationTimestamp"}};
    cells = {name, [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"spec", "type"}, a, "ClusterIP"); },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"spec", "clusterIP"}, a, "None"); },
             [](const JsonValue&, kube::JsonAlloc& a, kube::TimePoint) { return kube::str("<none>", a); },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) {
               std::string out;
               const JsonValue* ports = kube::find(o, {"spec", "ports"});
               if (ports != nullptr && ports->IsArray()) {
                 for (const auto& p : ports->GetArray()) {
                   auto port = kube::getInt(p, {"port"});
                   if (!port) continue;
                   if (!out.empty()) out += ",";
                   out += std::to_string(*port) + "/" + kube::getString(p, {"protocol"}, "TCP");
                 }
               }
               return kube::str(out.empty() ? "<none>" : out, a);
             },
             age};
  } else if (rt.kind == "Event") {
    cols = {{"Last Seen", "string", "", "Last seen"}, {"Type", "string", "", "Type"}, {"Reason", "string", "", "Reason"}, {"Object", "string", "", "Object"}, {"Message", "string", "", "Message"}};
    cells = {[](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint now) {
               const JsonValue* t = kube::find(o, {"lastTimestamp"});
               if (t == nullptr || !t->IsString()) t = kube::find(o, {"eventTime"});
               if (t == nullptr || !t->IsString()) t = kube::find(o, {"metadata", "creationTimestamp"});
               return kube::str(translateTimestampSince(t, now), a);
             },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"type"}, a, ""); },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"reason"}, a, ""); },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) {
               std::string kind = kube::getString(o, {"involvedObject", "kind"});
               for (auto& ch : kind) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
               return kube::str(kind + "/" + kube::getString(o, {"involvedObject", "name"}), a);
             },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"message"}, a, ""); }};
  } else if (rt.kind == "Lease") {
    cols = {{"Name", "string", "name", nameDesc}, {"Holder", "string", "", "The holder of the lease"}, {"Age", "string", "", "CreationTimestamp"}};
    cells = {name, [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"spec", "holderIdentity"}, a, ""); }, age};
  } else if (rt.kind == "EndpointSlice") {
    cols = {{"Name", "string", "name", nameDesc}, {"AddressType", "string", "", "Address type"}, {"Ports", "string", "", "Ports"}, {"Endpoints", "string", "", "Endpoints"}, {"Age", "string", "", "CreationTimestamp"}};
    cells = {name, [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"addressType"}, a, ""); },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) {
               std::string out;
               const JsonValue* ports = kube::find(o, {"ports"});
               if (ports != nullptr && ports->IsArray()) {
                 for (const auto& p : ports->GetArray()) {
                   if (auto port = kube::getInt(p, {"port"})) out += (out.empty() ? "" : ",") + std::to_string(*port);
                 }
               }
               return kube::str(out.empty() ? "<unset>" : out, a);
             },
             [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) {
               std::string out;
               const JsonValue* eps = kube::find(o, {"endpoints"});
               if (eps != nullptr && eps->IsArray()) {
                 for (const auto& e : eps->GetArray()) {
                   const JsonValue* addrs = kube::find(e, {"addresses"});
                   if (addrs == nullptr || !addrs->IsArray()) continue;
                   for (const auto& ad : addrs->GetArray()) {
                     if (ad.IsString()) out += (out.empty() ? "" : ",") + std::string(kube::view(ad));
                   }
                 }
               }
               return kube::str(out.empty() ? "<unset>" : out, a);
             },
             age};
  } else if (rt.kind == "CustomResourceDefinition") {
    cols = {{"Name", "string", "name", nameDesc}, {"Created At", "date", "", "CreationTimestamp"}};
    cells = {name, [](const JsonValue& o, kube::JsonAlloc& a, kube::TimePoint) { return strCell(o, {"metadata", "creationTimestamp"}, a, ""); }};
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::string renderTable(const ResourceType& rt, const std::vector<std::string>& items,
                        const std::string& resourceVersion, const std::string& continueToken,
                        const std::string& includeObject) {
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "kind", "Table", a);
  kube::setString(d, "apiVersion", "meta.k8s.io/v1", a);
  JsonValue md(rapidjson::kObjectType);
  if (!resourceVersion.empty()) kube::setString(md, "resourceVersion", resourceVersion, a);
  if (!continueToken.empty()) kube::setString(md, "continue", continueToken, a);
  d.AddMember("metadata", std::move(md), a);

  std::vector<Column> cols;
  std::vector<CellFn> cells;
  if (!builtinColumns(rt, cols, cells)) {
    cols.push_back({"Name", "string", "name", "Name must be unique within a namespace."});
    cells.push_back([](const JsonValue& o, kube::JsonAlloc& al, kube::TimePoint) { return kube::str(kube::name(o), al); });
    if (rt.columns.empty()) {
      cols.push_back({"Age", "date", "", "CreationTimestamp is a timestamp representing the server time when this object was created."});
      cells.push_back(age);
    }
    for (const auto& pc : rt.columns) {
      cols.push_back({pc.name, pc.type, pc.format, pc.description, pc.priority});
      std::string path = pc.jsonPath;
      std::string type = pc.type;
      std::string format = pc.format;
      cells.push_back([path, type, format](const JsonValue& o, kube::JsonAlloc& al, kube::TimePoint now) {
        auto vals = evalJsonPath(o, path);
        if (!vals) return JsonValue();
        return printerCell(*vals, type, format, now, al);
      });
    }
  }
  JsonValue defs(rapidjson::kArrayType);
  for (const auto& c : cols) {
    JsonValue cd(rapidjson::kObjectType);
    kube::setString(cd, "name", c.name, a);
    kube::setString(cd, "type", c.type, a);
    kube::setString(cd, "format", c.format, a);
    kube::setString(cd, "description", c.description, a);
    cd.AddMember("priority", c.priority, a);
    defs.PushBack(std::move(cd), a);
  }
  d.AddMember("columnDefinitions", std::move(defs), a);
  JsonValue rows(rapidjson::kArrayType);
  auto now = kube::Clock::now();
  for (const auto& text : items) {
    auto obj = kube::parseJson(text);
    if (!obj) continue;
    JsonValue row(rapidjson::kObjectType);
    JsonValue rc(rapidjson::kArrayType);
    for (const auto& fn : cells) rc.PushBack(fn(*obj, a, now), a);
    row.AddMember("cells", std::move(rc), a);
    if (includeObject == "Object") {
      row.AddMember("object", JsonValue(*obj, a), a);
    } else if (includeObject != "None") {
      JsonValue pom(rapidjson::kObjectType);
      kube::setString(pom, "kind", "PartialObjectMetadata", a);
      kube::setString(pom, "apiVersion", "meta.k8s.io/v1", a);
      const JsonValue* m = kube::find(*obj, {"metadata"});
      pom.AddMember("metadata", m != nullptr ? JsonValue(*m, a) : JsonValue(rapidjson::kObjectType), a);
      row.AddMember("object", std::move(pom), a);
    }
    rows.PushBack(std::move(row), a);
  }
  d.AddMember("rows", std::move(rows), a);
  return kube::toJson(d);
}

}  // namespace apiserver
