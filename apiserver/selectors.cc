#include "apiserver/selectors.h"

#include <set>

namespace apiserver {

kube::StatusOr<Selectors> Selectors::parse(const std::string& labelSelector,
                                           const std::string& fieldSelector,
                                           const ResourceType& rt) {
  Selectors s;
  auto l = kube::Selector::parse(labelSelector);
  if (!l) return l.status();
  s.labels_ = std::move(*l);
  auto f = kube::FieldSelector::parse(fieldSelector);
  if (!f) return f.status();
  static const std::set<std::string> kEventFields = {
      "involvedObject.kind",      "involvedObject.namespace", "involvedObject.name",
      "involvedObject.uid",       "involvedObject.apiVersion", "involvedObject.resourceVersion",
      "involvedObject.fieldPath", "reason",                    "reportingComponent",
      "source",                   "type"};
  for (const auto& r : f->requirements()) {
    bool ok = r.field == "metadata.name" || r.field == "metadata.namespace" ||
              (rt.group.empty() && rt.kind == "Event" && kEventFields.count(r.field)) ||
              (rt.group.empty() && rt.kind == "Secret" && r.field == "type") ||
              (rt.group.empty() && rt.kind == "Namespace" && r.field == "status.phase");
    if (!ok) {
      return kube::Status::badRequest("field label not supported: " + r.field);
    }
  }
  s.fields_ = std::move(*f);
  return s;
}

bool Selectors::matches(const std::string& objectJson) const {
  auto doc = kube::parseJson(objectJson);
  if (!doc) return false;
  if (!name_.empty() && kube::name(*doc) != name_) return false;
  if (!labels_.matchesObject(*doc)) return false;
  for (const auto& r : fields_.requirements()) {
    // Events' "source" field means source.component, as in the apiserver's field set.
    std::string field = r.field == "source" ? "source.component" : r.field;
    const kube::JsonValue* cur = doc.operator->();
    size_t pos = 0;
    while (cur != nullptr && pos <= field.size()) {
      size_t dot = field.find('.', pos);
      if (dot == std::string::npos) dot = field.size();
      cur = kube::find(*cur, {std::string_view(field).substr(pos, dot - pos)});
      pos = dot + 1;
    }
    std::string actual = cur != nullptr && cur->IsString() ? std::string(kube::view(*cur)) : "";
    if ((actual == r.value) != (r.op == kube::FieldOp::kEquals)) return false;
  }
  return true;
}

}  // namespace apiserver
