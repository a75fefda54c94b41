#pragma once
// Label selectors and field selectors, as in apimachinery's labels/fields packages:
//  - Selector::parse("a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j")
//  - Selector::fromLabelSelector(metav1.LabelSelector JSON: matchLabels + matchExpressions)
//  - validation of label keys (optional DNS-subdomain prefix + "/" + 63-char name) and values
//  - FieldSelector::parse("metadata.name=x,metadata.namespace!=y") into requirements that the
//    server evaluates (fieldMatches() offers a generic evaluation on dotted JSON paths).
//
// Threading: all types are immutable values after construction; share them freely across threads.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kube/json.h"

namespace kube {

// Label key: [prefix/]name; prefix a DNS subdomain (<= 253), name <= 63 chars of [-A-Za-z0-9_.]
// beginning and ending alphanumeric. Returns Invalid with the offending key in the message.
[[nodiscard]] Status validateLabelKey(std::string_view key);
// Label value: empty, or <= 63 chars of [-A-Za-z0-9_.] beginning and ending alphanumeric.
[[nodiscard]] Status validateLabelValue(std::string_view value);
// Validates every key and value of a labels object ({"k":"v",...}).
[[nodiscard]] Status validateLabels(const JsonValue& labels);

enum class SelectorOp { kEquals, kDoubleEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };

struct LabelRequirement {
  std::string key;
  SelectorOp op = SelectorOp::kExists;
  std::vector<std::string> values;  // sorted, unique; one value for (Double)Equals/NotEquals

  bool matches(const JsonValue& labels) const;
  std::string toString() const;
};

class Selector {
 public:
  // The empty selector: matches everything.
  Selector() = default;
  static Selector everything() { return Selector(); }
  // Matches no object (a null LabelSelector in Kubernetes API objects).
  static Selector nothing() {
    Selector s;
    s.nothing_ = true;
    return s;
  }

  // String syntax; "" is everything. Errors are BadRequest naming the offending part.
  [[nodiscard]] static StatusOr<Selector> parse(std::string_view text);
  // metav1.LabelSelector JSON. nullptr or JSON null -> nothing(); {} -> everything().
  [[nodiscard]] static StatusOr<Selector> fromLabelSelector(const JsonValue* labelSelector);

  // `labels` is an object of string values (metadata.labels); anything else counts as no labels.
  bool matches(const JsonValue& labels) const;
  // Convenience: matches(obj.metadata.labels).
  bool matchesObject(const JsonValue& object) const;

  bool isEverything() const { return !nothing_ && requirements_.empty(); }
  bool isNothing() const { return nothing_; }
  const std::vector<LabelRequirement>& requirements() const { return requirements_; }
  // Canonical string form (requirements sorted by key), suitable for ?labelSelector=.
  std::string toString() const;

 private:
  std::vector<LabelRequirement> requirements_;
  bool nothing_ = false;
};

enum class FieldOp { kEquals, kNotEquals };

struct FieldRequirement {
  std::string field;  // e.g. "metadata.name"
  FieldOp op = FieldOp::kEquals;
  std::string value;  // unescaped
};

class FieldSelector {
 public:
  // "f1=v1,f2!=v2" ("==" equals "="); values may escape '\', ',' and '=' with a backslash.
  [[nodiscard]] static StatusOr<FieldSelector> parse(std::string_view text);

  const std::vector<FieldRequirement>& requirements() const { return requirements_; }
  bool isEverything() const { return requirements_.empty(); }
  // Generic evaluation: the field is a dotted path into the object; strings, numbers and booleans
  // compare by their text form, a missing field reads as "".
  bool matches(const JsonValue& object) const;
  std::string toString() const;

 private:
  std::vector<FieldRequirement> requirements_;
};

// RFC 1123 names as Kubernetes validates them: a label (namespaces, task names: [a-z0-9-], at most
// 63, no leading or trailing '-') and a subdomain (object names: dot-separated labels, at most 253).
bool isDnsLabel(const std::string& s);
bool isDnsSubdomain(const std::string& s);

}  // namespace kube
