#include "apiserver/patch.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace apiserver {
namespace {

using kube::JsonAlloc;
using kube::JsonValue;
using kube::Status;

// ---------------------------------------------------------------------------------------------
// Shared helpers

// True when `v` nests no deeper than `budget` levels. The recursion is bounded by `budget`, so
// the check itself is safe on arbitrarily deep input.
bool withinDepth(const JsonValue& v, int budget) {
  if (budget < 0) return false;
  if (v.IsObject()) {
    for (const auto& m : v.GetObject()) {
      if (!withinDepth(m.value, budget - 1)) return false;
    }
  } else if (v.IsArray()) {
    for (const auto& e : v.GetArray()) {
      if (!withinDepth(e, budget - 1)) return false;
    }
  }
  return true;
}

Status tooDeep() {
  return Status::badRequest("patch nesting exceeds " + std::to_string(kMaxPatchDepth) + " levels");
}

std::string_view nameOf(const JsonValue& member) { return kube::view(member); }

JsonValue::MemberIterator findMember(JsonValue& obj, std::string_view name) {
  return obj.FindMember(JsonValue(rapidjson::StringRef(name.data(), name.size())));
}

// Erases obj[name] keeping the order of the other members (RemoveMember would move the last
// member into the hole, reordering what the client sees).
bool eraseMember(JsonValue& obj, std::string_view name) {
  auto it = findMember(obj, name);
  if (it == obj.MemberEnd()) return false;
  obj.EraseMember(it);
  return true;
}

// Deep copy with our allocator (RapidJSON 1.1 shares const-string refs; parsed input has none).
JsonValue copyOf(const JsonValue& v, JsonAlloc& a) {
  JsonValue out;
  out.CopyFrom(v, a);
  return out;
}

// Sets obj[name] = value, keeping the member's position when it already exists.
void putMember(JsonValue& obj, std::string_view name, JsonValue&& value, JsonAlloc& a) {
  auto it = findMember(obj, name);
  if (it != obj.MemberEnd()) {
    it->value = std::move(value);
  } else {
    obj.AddMember(kube::str(name, a), std::move(value), a);
  }
}

bool startsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.substr(0, prefix.size()) == prefix;
}

// ---------------------------------------------------------------------------------------------
// RFC 7386

// `patch` is known to be within kMaxPatchDepth, so the recursion is bounded.
void mergePatchInto(JsonValue& target, const JsonValue& patch, JsonAlloc& a) {
  if (!patch.IsObject()) {
    target.CopyFrom(patch, a);
    return;
  }
  if (!target.IsObject()) target.SetObject();
  for (const auto& m : patch.GetObject()) {
    std::string_view key = nameOf(m.name);
    if (m.value.IsNull()) {
      eraseMember(target, key);
      continue;
    }
    auto it = findMember(target, key);
    if (it != target.MemberEnd()) {
      mergePatchInto(it->value, m.value, a);
    } else {
      // Merging into null strips nulls nested in the new value, as RFC 7386 requires.
      JsonValue fresh;
      mergePatchInto(fresh, m.value, a);
      target.AddMember(kube::str(key, a), std::move(fresh), a);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// RFC 6902

struct Pointer {
  std::vector<std::string> tokens;
};

// Parses an RFC 6901 pointer; nullopt when malformed.
std::optional<Pointer> parsePointer(std::string_view s) {
  Pointer p;
  if (s.empty()) return p;
  if (s[0] != '/') return std::nullopt;
  std::string cur;
  for (size_t i = 1; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == '/') {
      p.tokens.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (s[i] == '~') {
      if (i + 1 >= s.size()) return std::nullopt;
      if (s[i + 1] == '0') {
        cur.push_back('~');
      } else if (s[i + 1] == '1') {
        cur.push_back('/');
      } else {
        return std::nullopt;
      }
      ++i;
      continue;
    }
    cur.push_back(s[i]);
  }
  return p;
}

// Array index token: decimal digits without leading zeros. nullopt when not an index or when it
// cannot fit (which also means it is out of range for any real array).
std::optional<size_t> parseIndex(std::string_view tok) {
  if (tok.empty() || tok.size() > 9) return std::nullopt;
  if (tok.size() > 1 && tok[0] == '0') return std::nullopt;
  size_t n = 0;
  for (char c : tok) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  return n;
}

// Walks tokens[0, end) from root; nullptr when a step is missing.
JsonValue* resolve(JsonValue& root, const Pointer& p, size_t end) {
  JsonValue* cur = &root;
  for (size_t i = 0; i < end; ++i) {
    const std::string& tok = p.tokens[i];
    if (cur->IsObject()) {
      auto it = findMember(*cur, tok);
      if (it == cur->MemberEnd()) return nullptr;
      cur = &it->value;
    } else if (cur->IsArray()) {
      auto idx = parseIndex(tok);
      if (!idx || *idx >= cur->Size()) return nullptr;
      cur = &(*cur)[static_cast<rapidjson::SizeType>(*idx)];
    } else {
      return nullptr;
    }
  }
  return cur;
}

class JsonPatcher {
 public:
  explicit JsonPatcher(kube::Json& doc) : doc_(doc), a_(doc.GetAllocator()) {}

  Status apply(const JsonValue& ops) {
    if (!ops.IsArray()) {
      return Status::badRequest("json patch must be a JSON array of operations");
    }
    rapidjson::SizeType i = 0;
    for (const auto& op : ops.GetArray()) {
      Status s = applyOne(op, i++);
      if (!s.isOk()) return s;
    }
    return Status::ok();
  }

 private:
  Status malformed(rapidjson::SizeType i, const std::string& why) {
    return Status::badRequest("invalid json patch operation " + std::to_string(i) + ": " + why);
  }
  static Status notApplicable(std::string_view op, const std::string& why) {
    return Status::invalid("jsonpatch " + std::string(op) + " operation does not apply: " + why);
  }

  Status applyOne(const JsonValue& op, rapidjson::SizeType i) {
    if (!op.IsObject()) return malformed(i, "operation must be a JSON object");
    const JsonValue* opName = kube::find(op, {"op"});
    if (!opName || !opName->IsString()) return malformed(i, "missing \"op\" string");
    const JsonValue* pathV = kube::find(op, {"path"});
    if (!pathV || !pathV->IsString()) return malformed(i, "missing \"path\" string");
    std::string_view name = kube::view(*opName);
    std::string_view pathText = kube::view(*pathV);
    auto path = parsePointer(pathText);
    if (!path) return malformed(i, "invalid JSON pointer \"" + std::string(pathText) + "\"");

    if (name == "add" || name == "replace" || name == "test") {
      const JsonValue* value = kube::find(op, {"value"});
      if (!value) return malformed(i, "\"" + std::string(name) + "\" needs a \"value\"");
      if (!withinDepth(*value, kMaxPatchDepth)) return tooDeep();
      if (name == "add") return add(*path, pathText, copyOf(*value, a_), "add");
      if (name == "replace") return replace(*path, pathText, copyOf(*value, a_));
      return test(*path, pathText, *value);
    }
    if (name == "remove") {
      JsonValue ignored;
      return remove(*path, pathText, "remove", "path", ignored);
    }
    if (name == "move" || name == "copy") {
      const JsonValue* fromV = kube::find(op, {"from"});
      if (!fromV || !fromV->IsString()) {
        return malformed(i, "\"" + std::string(name) + "\" needs a \"from\" string");
      }
      std::string_view fromText = kube::view(*fromV);
      auto from = parsePointer(fromText);
      if (!from) return malformed(i, "invalid JSON pointer \"" + std::string(fromText) + "\"");
      if (name == "move") return move(*from, fromText, *path, pathText);
      return copy(*from, fromText, *path, pathText);
    }
    return malformed(i, "unsupported operation \"" + std::string(name) + "\"");
  }

  Status add(const Pointer& p, std::string_view pathText, JsonValue&& value, std::string_view op) {
    if (p.tokens.empty()) {
      static_cast<JsonValue&>(doc_) = std::move(value);
      return Status::ok();
    }
    JsonValue* parent = resolve(doc_, p, p.tokens.size() - 1);
    if (!parent) return notApplicable(op, "doc is missing path: " + std::string(pathText));
    const std::string& last = p.tokens.back();
    if (parent->IsObject()) {
      putMember(*parent, last, std::move(value), a_);
      return Status::ok();
    }
    if (parent->IsArray()) {
      if (last == "-") {
        parent->PushBack(std::move(value), a_);
        return Status::ok();
      }
      auto idx = parseIndex(last);
      if (!idx || *idx > parent->Size()) {
        return notApplicable(op, "index out of range: " + std::string(pathText));
      }
      // RapidJSON has no insert: append, then bubble the new element back into place.
      parent->PushBack(std::move(value), a_);
      for (size_t j = parent->Size() - 1; j > *idx; --j) {
        (*parent)[static_cast<rapidjson::SizeType>(j)].Swap(
            (*parent)[static_cast<rapidjson::SizeType>(j - 1)]);
      }
      return Status::ok();
    }
    return notApplicable(op, "doc is missing path: " + std::string(pathText));
  }

  // Detaches the value at `p` into `out`.
  Status remove(const Pointer& p, std::string_view pathText, std::string_view op,
                std::string_view what, JsonValue& out) {
    if (p.tokens.empty()) {
      out = std::move(static_cast<JsonValue&>(doc_));
      static_cast<JsonValue&>(doc_).SetNull();
      return Status::ok();
    }
    std::string missing = "doc is missing " + std::string(what) + ": " + std::string(pathText);
    JsonValue* parent = resolve(doc_, p, p.tokens.size() - 1);
    if (!parent) return notApplicable(op, missing);
    const std::string& last = p.tokens.back();
    if (parent->IsObject()) {
      auto it = findMember(*parent, last);
      if (it == parent->MemberEnd()) return notApplicable(op, missing);
      out = std::move(it->value);
      parent->EraseMember(it);
      return Status::ok();
    }
    if (parent->IsArray()) {
      auto idx = parseIndex(last);
      if (!idx || *idx >= parent->Size()) return notApplicable(op, missing);
      out = std::move((*parent)[static_cast<rapidjson::SizeType>(*idx)]);
      parent->Erase(parent->Begin() + static_cast<rapidjson::SizeType>(*idx));
      return Status::ok();
    }
    return notApplicable(op, missing);
  }

  Status replace(const Pointer& p, std::string_view pathText, JsonValue&& value) {
    JsonValue* target = resolve(doc_, p, p.tokens.size());
    if (!target) {
      return notApplicable("replace", "doc is missing path: " + std::string(pathText));
    }
    *target = std::move(value);
    return Status::ok();
  }

  Status test(const Pointer& p, std::string_view pathText, const JsonValue& expected) {
    JsonValue* actual = resolve(doc_, p, p.tokens.size());
    if (!actual) {
      return notApplicable("test", "doc is missing path: " + std::string(pathText));
    }
    if (!withinDepth(*actual, kMaxPatchDepth) || !(*actual == expected)) {
      return Status::invalid("testing value " + std::string(pathText) + " failed: test failed");
    }
    return Status::ok();
  }

  static bool isProperPrefix(const Pointer& prefix, const Pointer& p) {
    if (prefix.tokens.size() >= p.tokens.size()) return false;
    return std::equal(prefix.tokens.begin(), prefix.tokens.end(), p.tokens.begin());
  }

  Status move(const Pointer& from, std::string_view fromText, const Pointer& p,
              std::string_view pathText) {
    if (isProperPrefix(from, p)) {
      return notApplicable("move", "cannot move " + std::string(fromText) + " into its own child " +
                                       std::string(pathText));
    }
    if (from.tokens == p.tokens) {
      if (!resolve(doc_, from, from.tokens.size())) {
        return notApplicable("move", "doc is missing from path: " + std::string(fromText));
      }
      return Status::ok();
    }
    JsonValue value;
    Status s = remove(from, fromText, "move", "from path", value);
    if (!s.isOk()) return s;
    return add(p, pathText, std::move(value), "move");
  }

  Status copy(const Pointer& from, std::string_view fromText, const Pointer& p,
              std::string_view pathText) {
    JsonValue* source = resolve(doc_, from, from.tokens.size());
    if (!source) return notApplicable("copy", "doc is missing from path: " + std::string(fromText));
    if (!withinDepth(*source, kMaxPatchDepth)) return tooDeep();
    return add(p, pathText, copyOf(*source, a_), "copy");
  }

  kube::Json& doc_;
  JsonAlloc& a_;
};

// ---------------------------------------------------------------------------------------------
// Strategic merge patch

// The merge-key table. Adding a list that merges is one line. Lists not listed are atomic
// (replaced), which is also what EndpointSlice endpoints/ports and every list of ConfigMap,
// Secret, Lease, Event and CustomResourceDefinition want.
constexpr std::array kListMergeRules = {
    ListMergeRule{"*", "metadata.finalizers", ""},  // patchStrategy=merge on a []string: set union
    ListMergeRule{"*", "metadata.ownerReferences", "uid"},
    ListMergeRule{"Service", "spec.ports", "port"},
    ListMergeRule{"Service", "status.conditions", "type"},
    ListMergeRule{"Namespace", "status.conditions", "type"},
};

constexpr std::array<std::string_view, 8> kStrategicKinds = {
    "ConfigMap",     "Secret", "Namespace", "Service",
    "EndpointSlice", "Lease",  "Event",     "CustomResourceDefinition"};

constexpr std::string_view kPatchDirective = "$patch";
constexpr std::string_view kRetainKeys = "$retainKeys";
constexpr std::string_view kSetElementOrder = "$setElementOrder/";
constexpr std::string_view kDeleteFromPrimitiveList = "$deleteFromPrimitiveList/";

bool isDirectiveKey(std::string_view k) {
  return k == kPatchDirective || k == kRetainKeys || startsWith(k, kSetElementOrder) ||
         startsWith(k, kDeleteFromPrimitiveList);
}

bool isDirectiveElement(const JsonValue& v) {
  return v.IsObject() && v.HasMember(JsonValue(
                             rapidjson::StringRef(kPatchDirective.data(), kPatchDirective.size())));
}

// A patch value taken verbatim (no original to merge into) must not carry nulls or directives
// into the stored object.
void sanitizeNewValue(JsonValue& v) {
  if (v.IsObject()) {
    for (auto it = v.MemberBegin(); it != v.MemberEnd();) {
      if (it->value.IsNull() || isDirectiveKey(nameOf(it->name))) {
        it = v.EraseMember(it);
      } else {
        sanitizeNewValue(it->value);
        ++it;
      }
    }
  } else if (v.IsArray()) {
    for (auto it = v.Begin(); it != v.End();) {
      if (isDirectiveElement(*it)) {
        it = v.Erase(it);
      } else {
        sanitizeNewValue(*it);
        ++it;
      }
    }
  }
}

std::string childPath(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  std::string out(path);
  out.push_back('.');
  out.append(key);
  return out;
}

enum class ElementKind { kEmpty, kMap, kPrimitive };

class StrategicMerger {
 public:
  StrategicMerger(JsonAlloc& a, std::string_view kind) : a_(a), kind_(kind) {}

  // `patch` is a private, mutable copy: directives are consumed from it.
  Status mergeMap(JsonValue& orig, JsonValue& patch, const std::string& path, int depth) {
    if (depth > kMaxPatchDepth) return tooDeep();
    auto directive = findMember(patch, kPatchDirective);
    if (directive != patch.MemberEnd()) {
      std::string_view d = kube::view(directive->value);
      if (d == "replace") {
        patch.EraseMember(directive);
        sanitizeNewValue(patch);
        orig = std::move(patch);
        return Status::ok();
      }
      if (d == "delete") {
        orig.SetObject();
        return Status::ok();
      }
      if (d == "merge") {
        // Explicit merge is the default behaviour for maps.
        patch.EraseMember(directive);
      } else {
        return Status::badRequest("unknown patch type: " + kube::toJson(directive->value) +
                                  " in map: " + (path.empty() ? "<root>" : path));
      }
    }
    if (!orig.IsObject()) orig.SetObject();

    if (Status s = applyRetainKeys(orig, patch, path); !s.isOk()) return s;
    if (Status s = applySetElementOrders(orig, patch, path, depth); !s.isOk()) return s;

    for (auto& m : patch.GetObject()) {
      std::string_view key = nameOf(m.name);
      if (startsWith(key, kDeleteFromPrimitiveList)) {
        std::string_view field = key.substr(kDeleteFromPrimitiveList.size());
        if (!m.value.IsArray()) {
          return Status::badRequest("invalid patch: " + std::string(key) + " must be a list");
        }
        auto it = findMember(orig, field);
        if (it != orig.MemberEnd() && it->value.IsArray()) deleteFromSlice(it->value, m.value);
        continue;
      }
      if (m.value.IsNull()) {
        eraseMember(orig, key);
        continue;
      }
      auto it = findMember(orig, key);
      if (it == orig.MemberEnd()) {
        JsonValue fresh = std::move(m.value);
        sanitizeNewValue(fresh);
        orig.AddMember(kube::str(key, a_), std::move(fresh), a_);
        continue;
      }
      std::string sub = childPath(path, key);
      JsonValue& ov = it->value;
      if (ov.IsObject() && m.value.IsObject()) {
        if (Status s = mergeMap(ov, m.value, sub, depth + 1); !s.isOk()) return s;
      } else if (ov.IsArray() && m.value.IsArray()) {
        if (Status s = mergeListField(ov, m.value, sub, depth + 1); !s.isOk()) return s;
      } else {
        JsonValue fresh = std::move(m.value);
        sanitizeNewValue(fresh);
        ov = std::move(fresh);
      }
    }
    return Status::ok();
  }

 private:
  const ListMergeRule* rule(const std::string& path) const {
    return findListMergeRule(kind_, path);
  }

  // A list field present in both: merge when the table says so, else the patch replaces it.
  Status mergeListField(JsonValue& orig, JsonValue& patch, const std::string& path, int depth) {
    const ListMergeRule* r = rule(path);
    if (!r) {
      sanitizeNewValue(patch);
      orig = std::move(patch);
      return Status::ok();
    }
    return mergeSlice(orig, patch, r->mergeKey, path, depth);
  }

  Status applyRetainKeys(JsonValue& orig, JsonValue& patch, const std::string& path) {
    auto it = findMember(patch, kRetainKeys);
    if (it == patch.MemberEnd()) return Status::ok();
    if (!it->value.IsArray()) {
      return Status::badRequest("invalid patch: $retainKeys must be a list of strings in " +
                                (path.empty() ? std::string("<root>") : path));
    }
    std::vector<std::string_view> keep;
    for (const auto& k : it->value.GetArray()) {
      if (!k.IsString()) {
        return Status::badRequest("invalid patch: $retainKeys must be a list of strings");
      }
      keep.push_back(kube::view(k));
    }
    for (auto m = orig.MemberBegin(); m != orig.MemberEnd();) {
      if (std::find(keep.begin(), keep.end(), nameOf(m->name)) == keep.end()) {
        m = orig.EraseMember(m);
      } else {
        ++m;
      }
    }
    patch.EraseMember(it);
    return Status::ok();
  }

  static Status elementKind(const JsonValue* a, const JsonValue* b, ElementKind& out) {
    out = ElementKind::kEmpty;
    for (const JsonValue* list : {a, b}) {
      if (!list) continue;
      for (const auto& e : list->GetArray()) {
        if (e.IsArray()) return Status::badRequest("lists of lists are not supported");
        ElementKind k = e.IsObject() ? ElementKind::kMap : ElementKind::kPrimitive;
        if (out == ElementKind::kEmpty) {
          out = k;
        } else if (out != k) {
          return Status::badRequest("list elements are not all of the same type");
        }
      }
    }
    return Status::ok();
  }

  // The identity used for ordering and matching: the merge-key value for maps, the element
  // itself for primitives. nullptr when a map lacks its merge key.
  static const JsonValue* identity(const JsonValue& e, std::string_view mergeKey) {
    if (mergeKey.empty() || !e.IsObject()) return &e;
    auto it = e.FindMember(JsonValue(rapidjson::StringRef(mergeKey.data(), mergeKey.size())));
    return it == e.MemberEnd() ? nullptr : &it->value;
  }

  static long indexOf(const std::vector<const JsonValue*>& order, const JsonValue* id) {
    if (!id) return -1;
    for (size_t i = 0; i < order.size(); ++i) {
      if (order[i] && *order[i] == *id) return static_cast<long>(i);
    }
    return -1;
  }

  static Status noMergeKey(const JsonValue& e, std::string_view mergeKey) {
    return Status::badRequest("map: " + kube::toJson(e) +
                              " does not contain declared merge key: " + std::string(mergeKey));
  }

  static void deleteFromSlice(JsonValue& orig, const JsonValue& toDelete) {
    for (auto it = orig.Begin(); it != orig.End();) {
      bool drop = false;
      for (const auto& d : toDelete.GetArray()) {
        if (*it == d) {
          drop = true;
          break;
        }
      }
      it = drop ? orig.Erase(it) : it + 1;
    }
  }

  // Orders `items` (owned values) as k8s normalizeElementOrder does: patch items by their
  // position in `patchOrder`, server-only items by their position in `serverOrder`, then the
  // two sorted runs interleaved so that both relative orders hold.
  void normalizeOrder(JsonValue& list, const std::vector<const JsonValue*>& patchOrder,
                      const std::vector<const JsonValue*>& serverOrder, std::string_view mergeKey) {
    std::vector<JsonValue> patchItems;
    std::vector<JsonValue> serverItems;
    for (auto& e : list.GetArray()) {
      const JsonValue* id = identity(e, mergeKey);
      if (indexOf(patchOrder, id) >= 0) {
        patchItems.emplace_back(std::move(e));
      } else {
        serverItems.emplace_back(std::move(e));
      }
    }
    auto sortBy = [&](std::vector<JsonValue>& items, const std::vector<const JsonValue*>& order) {
      // Elements absent from `order` keep their relative order after the present ones.
      std::vector<std::pair<long, size_t>> keys;
      for (size_t i = 0; i < items.size(); ++i) {
        long ix = indexOf(order, identity(items[i], mergeKey));
        keys.emplace_back(ix < 0 ? static_cast<long>(order.size()) : ix, i);
      }
      std::stable_sort(keys.begin(), keys.end(),
                       [](const auto& l, const auto& r) { return l.first < r.first; });
      std::vector<JsonValue> sorted;
      sorted.reserve(keys.size());
      for (const auto& k : keys) sorted.emplace_back(std::move(items[k.second]));
      items = std::move(sorted);
    };
    sortBy(patchItems, patchOrder);
    sortBy(serverItems, serverOrder);

    // mergeSortedSlice: a server-only item goes before a patch item only when both appear in the
    // server order and it came first there.
    list.SetArray();
    size_t i = 0;
    size_t j = 0;
    while (i < serverItems.size() || j < patchItems.size()) {
      bool takeServer;
      if (j >= patchItems.size()) {
        takeServer = true;
      } else if (i >= serverItems.size()) {
        takeServer = false;
      } else {
        long li = indexOf(serverOrder, identity(serverItems[i], mergeKey));
        long ri = indexOf(serverOrder, identity(patchItems[j], mergeKey));
        takeServer = li >= 0 && ri >= 0 && li < ri;
      }
      if (takeServer) {
        list.PushBack(std::move(serverItems[i++]), a_);
      } else {
        list.PushBack(std::move(patchItems[j++]), a_);
      }
    }
  }

  // mergeSlice for a list field with merge strategy. `patch` is consumed.
  Status mergeSlice(JsonValue& orig, JsonValue& patch, std::string_view mergeKey,
                    const std::string& path, int depth) {
    if (depth > kMaxPatchDepth) return tooDeep();
    ElementKind kind;
    if (Status s = elementKind(&orig, &patch, kind); !s.isOk()) return s;
    if (kind == ElementKind::kEmpty) return Status::ok();

    // Copy of the patch's element order before elements are moved out of it.
    JsonValue patchOrderHolder = copyOf(patch, a_);
    std::vector<const JsonValue*> patchOrder;
    // Server order: the original elements (after $patch: delete removals), before the patch's
    // new elements are appended.
    JsonValue serverHolder(rapidjson::kArrayType);

    if (kind == ElementKind::kPrimitive) {
      serverHolder = copyOf(orig, a_);
      for (auto& e : patch.GetArray()) {
        bool present = false;
        for (const auto& o : orig.GetArray()) {
          if (o == e) {
            present = true;
            break;
          }
        }
        if (!present) orig.PushBack(std::move(e), a_);
      }
      for (const auto& e : patchOrderHolder.GetArray()) patchOrder.push_back(&e);
    } else {
      if (mergeKey.empty()) {
        return Status::badRequest("cannot merge lists without merge key for " + path);
      }
      // Special elements first: {$patch: delete, key: v} removes, {$patch: replace} replaces.
      bool replaceAll = false;
      for (auto& e : patch.GetArray()) {
        auto d = findMember(e, kPatchDirective);
        if (d == e.MemberEnd()) continue;
        std::string_view dv = kube::view(d->value);
        if (dv == "delete") {
          const JsonValue* id = identity(e, mergeKey);
          if (!id) return noMergeKey(e, mergeKey);
          for (auto it = orig.Begin(); it != orig.End();) {
            const JsonValue* oid = identity(*it, mergeKey);
            it = (oid && *oid == *id) ? orig.Erase(it) : it + 1;
          }
        } else if (dv == "replace") {
          replaceAll = true;
        } else if (dv == "merge") {
          return Status::badRequest("merging lists cannot yet be specified in the patch");
        } else {
          return Status::badRequest("unknown patch type: " + kube::toJson(d->value) +
                                    " in list element: " + kube::toJson(e));
        }
      }
      serverHolder = copyOf(orig, a_);
      if (replaceAll) {
        JsonValue out(rapidjson::kArrayType);
        for (auto& e : patch.GetArray()) {
          if (isDirectiveElement(e)) continue;
          sanitizeNewValue(e);
          out.PushBack(std::move(e), a_);
        }
        orig = std::move(out);
        return Status::ok();
      }
      for (auto& e : patch.GetArray()) {
        if (isDirectiveElement(e)) continue;
        const JsonValue* id = identity(e, mergeKey);
        if (!id) return noMergeKey(e, mergeKey);
        JsonValue* match = nullptr;
        for (auto& o : orig.GetArray()) {
          const JsonValue* oid = identity(o, mergeKey);
          if (oid && *oid == *id) {
            match = &o;
            break;
          }
        }
        if (match) {
          if (Status s = mergeMap(*match, e, path, depth + 1); !s.isOk()) return s;
        } else {
          sanitizeNewValue(e);
          orig.PushBack(std::move(e), a_);
        }
      }
      for (const auto& e : patchOrderHolder.GetArray()) {
        if (!isDirectiveElement(e)) patchOrder.push_back(identity(e, mergeKey));
      }
    }

    std::vector<const JsonValue*> serverOrder;
    for (const auto& e : serverHolder.GetArray()) serverOrder.push_back(identity(e, mergeKey));
    normalizeOrder(orig, patchOrder, serverOrder, kind == ElementKind::kMap ? mergeKey : "");
    return Status::ok();
  }

  // $setElementOrder/<field>: merge the list (if the patch has one) then order it by the
  // directive, keeping server-only elements near their original neighbours.
  Status applySetElementOrders(JsonValue& orig, JsonValue& patch, const std::string& path,
                               int depth) {
    std::vector<std::string> fields;
    for (const auto& m : patch.GetObject()) {
      std::string_view key = nameOf(m.name);
      if (startsWith(key, kSetElementOrder)) {
        fields.emplace_back(key.substr(kSetElementOrder.size()));
      }
    }
    for (const std::string& field : fields) {
      std::string directiveKey = std::string(kSetElementOrder) + field;
      auto dit = findMember(patch, directiveKey);
      if (!dit->value.IsArray()) {
        return Status::badRequest("invalid patch: " + directiveKey + " must be a list");
      }
      JsonValue order = std::move(dit->value);
      patch.EraseMember(dit);

      std::string sub = childPath(path, field);
      const ListMergeRule* r = rule(sub);
      std::string_view mergeKey = r ? r->mergeKey : std::string_view();

      auto oit = findMember(orig, field);
      auto pit = findMember(patch, field);
      bool foundOrig = oit != orig.MemberEnd();
      bool foundPatch = pit != patch.MemberEnd();
      if (foundOrig && !oit->value.IsArray()) {
        return Status::badRequest("invalid patch: " + sub + " is not a list in the object");
      }
      if (foundPatch && !pit->value.IsArray()) {
        if (pit->value.IsNull()) continue;  // the field is being deleted; nothing to order
        return Status::badRequest("invalid patch: " + sub + " must be a list");
      }
      if (!foundOrig && !foundPatch) continue;

      JsonValue original = foundOrig ? copyOf(oit->value, a_) : JsonValue(rapidjson::kArrayType);
      JsonValue merged;
      if (foundOrig && foundPatch) {
        merged = std::move(oit->value);
        if (Status s = mergeListField(merged, pit->value, sub, depth + 1); !s.isOk()) return s;
      } else if (foundOrig) {
        merged = std::move(oit->value);
      } else {
        merged = std::move(pit->value);
        sanitizeNewValue(merged);
      }
      if (foundPatch) patch.EraseMember(findMember(patch, field));

      if (merged.IsArray()) {
        ElementKind kind;
        if (Status s = elementKind(&merged, nullptr, kind); !s.isOk()) return s;
        std::string_view key = kind == ElementKind::kMap ? mergeKey : std::string_view();
        if (kind == ElementKind::kMap && key.empty()) {
          // No merge key known for this list: the directive cannot identify elements.
          putMember(orig, field, std::move(merged), a_);
          continue;
        }
        std::vector<const JsonValue*> patchOrder;
        for (const auto& e : order.GetArray()) patchOrder.push_back(identity(e, key));
        std::vector<const JsonValue*> serverOrder;
        for (const auto& e : original.GetArray()) serverOrder.push_back(identity(e, key));
        normalizeOrder(merged, patchOrder, serverOrder, key);
      }
      putMember(orig, field, std::move(merged), a_);
    }
    return Status::ok();
  }

  JsonAlloc& a_;
  std::string_view kind_;
};

}  // namespace

const ListMergeRule* findListMergeRule(std::string_view kind, std::string_view path) {
  for (const auto& r : kListMergeRules) {
    if ((r.kind == "*" || r.kind == kind) && r.path == path) return &r;
  }
  return nullptr;
}

bool supportsStrategicMerge(std::string_view kind) {
  return std::find(kStrategicKinds.begin(), kStrategicKinds.end(), kind) != kStrategicKinds.end();
}

Status applyMergePatch(JsonValue& target, const JsonValue& patch, JsonAlloc& a) {
  if (!withinDepth(patch, kMaxPatchDepth)) return tooDeep();
  mergePatchInto(target, patch, a);
  return Status::ok();
}

Status applyJsonPatch(kube::Json& doc, const JsonValue& ops) {
  // Work on a copy so a failing operation leaves `doc` untouched (RFC 6902 section 5).
  if (!withinDepth(doc, kMaxPatchDepth)) return tooDeep();
  kube::Json work;
  work.CopyFrom(doc, work.GetAllocator());
  JsonPatcher patcher(work);
  Status s = patcher.apply(ops);
  if (!s.isOk()) return s;
  doc.Swap(work);
  return Status::ok();
}

Status applyStrategicMergePatch(JsonValue& target, const JsonValue& patch, JsonAlloc& a,
                                std::string_view kind) {
  if (!patch.IsObject()) {
    return Status::badRequest("strategic merge patch must be a JSON object");
  }
  if (!withinDepth(patch, kMaxPatchDepth)) return tooDeep();
  // Work on copies: the patch's directives are consumed, and a failure must leave target as is.
  JsonValue work = copyOf(target, a);
  JsonValue patchCopy = copyOf(patch, a);
  StrategicMerger merger(a, kind);
  Status s = merger.mergeMap(work, patchCopy, "", 0);
  if (!s.isOk()) return s;
  target = std::move(work);
  return Status::ok();
}

}  // namespace apiserver
