#pragma once
// Objects are RapidJSON documents: no generated models. These helpers read with type checks (a
// missing or mistyped field reads as absent, never as a crash) and build values with one allocator.

#include <rapidjson/document.h>
#include <rapidjson/pointer.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kube/status.h"

namespace kube {

// RapidJSON's pool allocator with 4 KiB chunks. Its own default is a fixed 64 KiB chunk per
// document, however small: an Allocation of 2 KiB held 64 KiB of heap, so a cache of thousands
// of objects (the operator's informers) cost tens of KiB each, and every parse of a request or a
// watch event malloc'd and touched fresh 64 KiB. Larger documents take more chunks (or one chunk
// of the size asked for, when bigger).
class JsonAllocator : public rapidjson::MemoryPoolAllocator<> {
 public:
  static constexpr size_t kChunk = 4096;
  JsonAllocator() : MemoryPoolAllocator(kChunk) {}
};
using Json = rapidjson::GenericDocument<rapidjson::UTF8<>, JsonAllocator>;
using JsonValue = Json::ValueType;
using JsonAlloc = Json::AllocatorType;
// Immutable shared snapshot, as handed out by caches: copy before editing.
using JsonPtr = std::shared_ptr<const Json>;

StatusOr<Json> parseJson(std::string_view text);
std::string toJson(const JsonValue& v);
std::string toPrettyJson(const JsonValue& v);
// Deep copy into a new document.
Json cloneJson(const JsonValue& v);
JsonPtr shareJson(Json&& doc);

// Walks object members by name; returns nullptr when any step is missing or not an object.
const JsonValue* find(const JsonValue& v, std::initializer_list<std::string_view> path);
JsonValue* find(JsonValue& v, std::initializer_list<std::string_view> path);
std::string getString(const JsonValue& v, std::initializer_list<std::string_view> path,
                      std::string_view def = "");
std::optional<int64_t> getInt(const JsonValue& v, std::initializer_list<std::string_view> path);
bool getBool(const JsonValue& v, std::initializer_list<std::string_view> path, bool def = false);

// Sets obj[name] = value (replacing an existing member). `obj` must be an object.
void setMember(JsonValue& obj, std::string_view name, JsonValue&& value, JsonAlloc& a);
void setString(JsonValue& obj, std::string_view name, std::string_view s, JsonAlloc& a);
// Returns obj[name] as an object, creating (or replacing a non-object with) an empty one.
JsonValue& ensureObject(JsonValue& obj, std::string_view name, JsonAlloc& a);
bool removeMember(JsonValue& obj, std::string_view name);
inline JsonValue str(std::string_view s, JsonAlloc& a) {
  return JsonValue(s.data(), static_cast<rapidjson::SizeType>(s.size()), a);
}
inline std::string_view view(const JsonValue& v) {
  return v.IsString() ? std::string_view(v.GetString(), v.GetStringLength()) : std::string_view();
}

// Common metadata accessors.
inline std::string name(const JsonValue& o) { return getString(o, {"metadata", "name"}); }
inline std::string ns(const JsonValue& o) { return getString(o, {"metadata", "namespace"}); }
inline std::string resourceVersion(const JsonValue& o) {
  return getString(o, {"metadata", "resourceVersion"});
}
inline std::string uid(const JsonValue& o) { return getString(o, {"metadata", "uid"}); }

}  // namespace kube
