#pragma once
// The pieces of a meta.k8s.io/v1 Table response (`kubectl get`) that need Kubernetes fidelity:
// the JSONPath subset CRD additionalPrinterColumns use, ages rendered exactly like
// k8s.io/apimachinery's duration.HumanDuration, and cells typed the way apiextensions-apiserver's
// tableconvertor types them.
//
// Promises: pure functions, no clock reads (callers pass `now`), no exceptions, no crashes on any
// path or object. Results of evalJsonPath point into the evaluated object and live as long as it.

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "kube/json.h"
#include "kube/status.h"
#include "kube/timeutil.h"

namespace apiserver {

// Evaluates a kubectl-style JSONPath: "{.a.b}" or ".a.b", ".a[0].b", ".a[*].b", ".a[-1]",
// ".a[1:3]", "['key.with.dots']", ".a.*", filters "[?(@.type==\"Ready\")].status" (==, !=, <,
// <=, >, >= against a string, number, true/false or null; "[?(@.x)]" tests existence).
// Missing keys and out-of-range indices yield no result (client-go's AllowMissingKeys(true), as
// the tableconvertor sets it); only a malformed path is an error (400).
kube::StatusOr<std::vector<const kube::JsonValue*>> evalJsonPath(const kube::JsonValue& obj,
                                                                 std::string_view path);
// Parses without evaluating, for CRD validation of additionalPrinterColumns[].jsonPath (422).
[[nodiscard]] kube::Status validateJsonPath(std::string_view path);

// duration.HumanDuration: "0s", "59s", "119s", "2m1s", "9m59s", "10m", "3h2m", "47h", "2d3h",
// "400d", "3y45d", "8y"; "<invalid>" for durations below -1s.
std::string humanDuration(std::chrono::nanoseconds d);
// kubectl's translateTimestampSince: the age of an RFC 3339 timestamp at `now`, or "<unknown>"
// when `ts` is absent, not a string or unparseable.
std::string translateTimestampSince(const kube::JsonValue* ts, kube::TimePoint now);

// One additionalPrinterColumns cell, as the tableconvertor builds it from the column's JSONPath
// results: only the first result counts (as upstream: "we only support simple JSON path");
// none or null -> null (kubectl prints <none>); type "integer" -> JSON integer (floats
// truncated), "number" -> JSON number, "boolean" -> bool, "date" -> age string ("<invalid>" when
// the string is not a timestamp), "string" -> the string, or for other values the text
// kubectl's JSONPath printer gives (numbers as Go prints them, objects/arrays as JSON). A value
// of the wrong type for its column, or an unknown column type, gives null. `format` is carried
// for the column definition and, like upstream, does not change the cell.
kube::JsonValue printerCell(const std::vector<const kube::JsonValue*>& values,
                            std::string_view type, std::string_view format, kube::TimePoint now,
                            kube::JsonAlloc& a);

}  // namespace apiserver
