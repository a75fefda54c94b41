#pragma once
// OpenAPI v3 structural schemas as CustomResourceDefinitions use them
// (spec.versions[].schema.openAPIV3Schema): pruning, defaulting and validation of custom
// resources, plus a light check that a CRD's schema is usable at all.
//
// Promises:
//  - applySchema runs the apiextensions-apiserver order: prune unknown fields, apply defaults,
//    validate. Error strings render like k8s.io/apimachinery field.Error, with messages from
//    kube-openapi's validator, so what kubectl prints matches a real cluster.
//  - Never crashes on hostile objects or schemas: types are checked before reading, recursion is
//    bounded by kMaxSchemaDepth, regular expressions that fail to compile or to run are reported
//    instead of thrown.
//  - Pure functions; the only state is a per-call regex cache.

#include <string>
#include <string_view>
#include <vector>

#include "kube/json.h"
#include "kube/status.h"

namespace apiserver {

// Objects or schemas nested deeper than this are reported invalid rather than walked.
inline constexpr int kMaxSchemaDepth = 128;
// Strings longer than this are not matched against `pattern` (std::regex recurses per
// character); they are reported invalid instead.
inline constexpr size_t kMaxPatternInput = 4096;

// One k8s field.Error.
struct FieldError {
  std::string field;   // k8s path: "spec.groups[0].count", map keys as "spec.labels[key]"
  std::string type;    // field.ErrorType text: "Required value", "Invalid value", ...
  std::string value;   // the bad value already rendered as Go prints it ("\"foo\"", "-1");
                       // empty when there is none
  std::string detail;  // free text after the value

  // "spec.count: Invalid value: -1: spec.count in body should be greater than or equal to 0".
  // Like field.Error.ErrorBody, "Required value", "Forbidden" and "Too long" omit the value.
  std::string toString() const;
};

struct SchemaOutcome {
  std::vector<FieldError> errors;
  // Dotted paths of the fields pruning removed ("spec.foo", "spec.items[0].bar"), in document
  // order. The caller decides whether they are an error (fieldValidation=Strict) or a warning.
  std::vector<std::string> unknownFields;

  bool ok() const { return errors.empty(); }
};

// Prunes, defaults and validates `object` (a whole custom resource) in place. At the root (and
// in x-kubernetes-embedded-resource objects) apiVersion, kind and metadata are always kept;
// metadata is neither pruned nor defaulted, and only metadata.name/generateName are type-checked.
SchemaOutcome applySchema(kube::JsonValue& object, const kube::JsonValue& openAPIV3Schema,
                          kube::JsonAlloc& a);

// Checks that `openAPIV3Schema` is structural enough to use: every keyword has the right JSON
// type, types are known and present where k8s requires them, patterns compile. 422 Invalid with
// the field errors in the message otherwise.
[[nodiscard]] kube::Status validateSchemaDefinition(const kube::JsonValue& openAPIV3Schema);

// Renders a list of field errors the way an aggregate does: one error as is, several as
// "[e1, e2]". Handy for the 422 Status message the server builds from SchemaOutcome::errors.
std::string joinFieldErrors(const std::vector<FieldError>& errors);

// A float as Go's fmt %v prints it (shortest round-trip digits, exponent form when the decimal
// exponent is < -4 or >= 6): 0.5, 100000, 1e+06, 1.5e-05. Error messages and table cells must print
// numbers exactly like the apiserver.
std::string formatGoFloat(double d);
// A JSON number as Go prints the value unstructured decoding gives (int64 or float64).
std::string formatGoNumber(const kube::JsonValue& number);
// Go's strconv.Quote for UTF-8 text.
std::string goQuote(std::string_view s);

}  // namespace apiserver
