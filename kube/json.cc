#include "kube/json.h"

#include <rapidjson/error/en.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace kube {

namespace {
// A name as a JSON string value that references `s` without copying. (A bare StringRef would
// convert to `const char*` and be read up to a NUL, which a string_view need not have.)
JsonValue key(std::string_view s) {
  return JsonValue(rapidjson::StringRef(s.data(), static_cast<rapidjson::SizeType>(s.size())));
}
}  // namespace

namespace {
// Deepest nesting accepted. Kubernetes objects stay far below it; far deeper input is hostile and
// would overflow the stack in the recursive walks (copy, compare, serialise) done afterwards.
constexpr int kMaxJsonDepth = 128;

bool tooDeep(std::string_view text) {
  int depth = 0;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        inString = false;
      }
    } else if (c == '"') {
      inString = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}
}  // namespace

StatusOr<Json> parseJson(std::string_view text) {
  if (tooDeep(text)) {
    return Status::badRequest("invalid JSON: nested more than " + std::to_string(kMaxJsonDepth) +
                              " levels deep");
  }
  Json d;
  d.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
  if (d.HasParseError()) {
    return Status::badRequest("invalid JSON at offset " + std::to_string(d.GetErrorOffset()) + ": " +
                              rapidjson::GetParseError_En(d.GetParseError()));
  }
  return d;
}

std::string toJson(const JsonValue& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

std::string toPrettyJson(const JsonValue& v) {
  rapidjson::StringBuffer buf;
  rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
  w.SetIndent(' ', 2);
  v.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

Json cloneJson(const JsonValue& v) {
  Json d;
  d.CopyFrom(v, d.GetAllocator());
  return d;
}

JsonPtr shareJson(Json&& doc) { return std::make_shared<const Json>(std::move(doc)); }

const JsonValue* find(const JsonValue& v, std::initializer_list<std::string_view> path) {
  const JsonValue* cur = &v;
  for (auto p : path) {
    if (!cur->IsObject()) return nullptr;
    auto it = cur->FindMember(key(p));
    if (it == cur->MemberEnd()) return nullptr;
    cur = &it->value;
  }
  return cur;
}

JsonValue* find(JsonValue& v, std::initializer_list<std::string_view> path) {
  return const_cast<JsonValue*>(find(static_cast<const JsonValue&>(v), path));
}

std::string getString(const JsonValue& v, std::initializer_list<std::string_view> path,
                      std::string_view def) {
  const JsonValue* f = find(v, path);
  if (f == nullptr || !f->IsString()) return std::string(def);
  return std::string(f->GetString(), f->GetStringLength());
}

std::optional<int64_t> getInt(const JsonValue& v, std::initializer_list<std::string_view> path) {
  const JsonValue* f = find(v, path);
  if (f == nullptr || !f->IsInt64()) return std::nullopt;
  return f->GetInt64();
}

bool getBool(const JsonValue& v, std::initializer_list<std::string_view> path, bool def) {
  const JsonValue* f = find(v, path);
  if (f == nullptr || !f->IsBool()) return def;
  return f->GetBool();
}

void setMember(JsonValue& obj, std::string_view name, JsonValue&& value, JsonAlloc& a) {
  auto it = obj.FindMember(key(name));
  if (it != obj.MemberEnd()) {
    it->value = std::move(value);
  } else {
    obj.AddMember(str(name, a), std::move(value), a);
  }
}

void setString(JsonValue& obj, std::string_view name, std::string_view s, JsonAlloc& a) {
  setMember(obj, name, str(s, a), a);
}

JsonValue& ensureObject(JsonValue& obj, std::string_view name, JsonAlloc& a) {
  auto it = obj.FindMember(key(name));
  if (it == obj.MemberEnd()) {
    obj.AddMember(str(name, a), JsonValue(rapidjson::kObjectType), a);
    return (obj.MemberEnd() - 1)->value;
  }
  if (!it->value.IsObject()) it->value.SetObject();
  return it->value;
}

bool removeMember(JsonValue& obj, std::string_view name) {
  if (!obj.IsObject()) return false;
  return obj.RemoveMember(key(name));
}

}  // namespace kube
