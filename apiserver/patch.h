#pragma once
// The three patch types the API server accepts, as pure functions over RapidJSON documents:
//   application/merge-patch+json           -> applyMergePatch (RFC 7386)
//   application/json-patch+json            -> applyJsonPatch (RFC 6902)
//   application/strategic-merge-patch+json -> applyStrategicMergePatch (built-in kinds only)
//
// Promises:
//  - Never crash on hostile input: every JSON type is checked before it is read, nesting deeper
//    than kMaxPatchDepth is refused, array indices are range-checked.
//  - JSON patch and strategic merge patch are all-or-nothing: on error the target is unchanged.
//    Merge patch cannot fail part-way (its only check runs before the first edit).
//  - Errors are Status values with the apiserver's codes: a malformed patch is 400 BadRequest;
//    a well-formed JSON patch that does not apply (failed `test`, missing path) is 422 Invalid.
//  - New values are allocated with the caller's allocator (the one that owns `target`).
//    Thread-compatible: no shared state besides the constant merge-key table.

#include <string_view>

#include "kube/json.h"
#include "kube/status.h"

namespace apiserver {

// Deeper patches are refused (400): recursion over them must stay far from the stack limit.
inline constexpr int kMaxPatchDepth = 512;

// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes a member, anything else
// (arrays included) replaces. A non-object patch replaces `target` entirely.
[[nodiscard]] kube::Status applyMergePatch(kube::JsonValue& target, const kube::JsonValue& patch,
                                           kube::JsonAlloc& a);

// RFC 6902 JSON patch: `ops` must be an array of operation objects (add, remove, replace, move,
// copy, test), applied in order to `doc` (whose root may be replaced by a "" path).
[[nodiscard]] kube::Status applyJsonPatch(kube::Json& doc, const kube::JsonValue& ops);

// Kubernetes strategic merge patch for the built-in kinds the server stores. Like a merge patch,
// except lists registered in the merge-key table merge (maps by their merge key, primitives as a
// set) and the directives $patch (replace|delete|merge), $retainKeys, $setElementOrder/<list>
// and $deleteFromPrimitiveList/<list> are honoured. Lists not in the table are replaced
// (atomic). `kind` selects the kind-specific rows of the table; unknown kinds get only the rows
// every object shares (metadata.finalizers, metadata.ownerReferences).
[[nodiscard]] kube::Status applyStrategicMergePatch(kube::JsonValue& target,
                                                    const kube::JsonValue& patch,
                                                    kube::JsonAlloc& a, std::string_view kind);

// Whether the server should accept application/strategic-merge-patch+json for `kind` (built-in
// kinds with a known patch schema); custom resources get 415 like the real apiserver.
bool supportsStrategicMerge(std::string_view kind);

// One row of the strategic-merge table: the list at dotted `path` (list elements add no path
// segment, e.g. "spec.ports") in objects of `kind` ("*" = every kind) merges; maps by
// `mergeKey`, primitives (empty mergeKey) as a set union. Exposed so tests and docs can list it.
struct ListMergeRule {
  std::string_view kind;
  std::string_view path;
  std::string_view mergeKey;
};
const ListMergeRule* findListMergeRule(std::string_view kind, std::string_view path);

}  // namespace apiserver
