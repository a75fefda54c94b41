#include "apiserver/protobuf.h"

#include <cstdint>
#include <optional>

#include "kube/kubeconfig.h"

namespace apiserver {

using kube::Json;
using kube::JsonAlloc;
using kube::JsonValue;
using kube::Status;

namespace {

// A cursor over protobuf wire format. Every read checks bounds; malformed input ends as an error.
class Reader {
 public:
  explicit Reader(std::string_view data) : d_(data) {}
  bool done() const { return pos_ >= d_.size(); }
  bool ok() const { return ok_; }

  // Next field: number and wire type; false at the end or on error.
  bool next(uint32_t& field, uint32_t& wire) {
    if (done() || !ok_) return false;
    auto key = varint();
    if (!key) return false;
    field = static_cast<uint32_t>(*key >> 3);
    wire = static_cast<uint32_t>(*key & 7);
    return field != 0;
  }
  std::optional<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= d_.size()) return fail();
      auto b = static_cast<uint8_t>(d_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    return fail();
  }
  std::optional<std::string_view> bytes() {
    auto n = varint();
    if (!n || *n > d_.size() - pos_) return failView();
    std::string_view out = d_.substr(pos_, *n);
    pos_ += *n;
    return out;
  }
  bool skip(uint32_t wire) {
    switch (wire) {
      case 0: return varint().has_value();
      case 1: return advance(8);
      case 2: return bytes().has_value();
      case 5: return advance(4);
      default: ok_ = false; return false;
    }
  }

 private:
  std::nullopt_t fail() {
    ok_ = false;
    return std::nullopt;
  }
  std::optional<std::string_view> failView() {
    ok_ = false;
    return std::nullopt;
  }
  bool advance(size_t n) {
    if (n > d_.size() - pos_) return ok_ = false;
    pos_ += n;
    return true;
  }
  std::string_view d_;
  size_t pos_ = 0;
  bool ok_ = true;
};

Status malformed() { return Status::badRequest("malformed protobuf body"); }

// map<string, string|bytes> entries: {1: key, 2: value}.
bool mapEntry(std::string_view entry, std::string& key, std::string& value) {
  Reader r(entry);
  uint32_t f = 0, w = 0;
  while (r.next(f, w)) {
    if (w == 2 && (f == 1 || f == 2)) {
      auto b = r.bytes();
      if (!b) return false;
      (f == 1 ? key : value) = std::string(*b);
    } else if (!r.skip(w)) {
      return false;
    }
  }
  return r.ok();
}

bool addMapEntry(JsonValue& obj, const char* field, std::string_view entry, bool base64, JsonAlloc& a) {
  std::string k, v;
  if (!mapEntry(entry, k, v)) return false;
  JsonValue& m = kube::ensureObject(obj, field, a);
  kube::setString(m, k, base64 ? kube::base64Encode(v) : v, a);
  return true;
}

void addToList(JsonValue& obj, const char* field, std::string_view s, JsonAlloc& a) {
  auto it = obj.FindMember(field);
  if (it == obj.MemberEnd()) {
    obj.AddMember(rapidjson::StringRef(field), JsonValue(rapidjson::kArrayType), a);
    it = obj.FindMember(field);
  }
  it->value.PushBack(kube::str(s, a), a);
}

bool decodeMeta(std::string_view data, JsonValue& md, JsonAlloc& a) {
  Reader r(data);
  uint32_t f = 0, w = 0;
  static const char* kStrings[] = {nullptr, "name", "generateName", "namespace", nullptr, "uid",
                                   "resourceVersion"};
  while (r.next(f, w)) {
    if (w == 2 && f >= 1 && f <= 6 && kStrings[f] != nullptr) {
      auto b = r.bytes();
      if (!b) return false;
      if (!b->empty()) kube::setString(md, kStrings[f], *b, a);
    } else if (w == 2 && (f == 11 || f == 12)) {
      auto b = r.bytes();
      if (!b || !addMapEntry(md, f == 11 ? "labels" : "annotations", *b, false, a)) return false;
    } else if (w == 2 && f == 14) {
      auto b = r.bytes();
      if (!b) return false;
      addToList(md, "finalizers", *b, a);
    } else if (!r.skip(w)) {
      return false;
    }
  }
  return r.ok();
}

}  // namespace

kube::StatusOr<Json> decodeKubernetesProtobuf(std::string_view body) {
  if (body.size() < 4 || body.substr(0, 4) != std::string_view("k8s\0", 4)) return malformed();
  Reader env(body.substr(4));
  std::string apiVersion, kind;
  std::string_view raw;
  uint32_t f = 0, w = 0;
  while (env.next(f, w)) {
    if (w == 2 && f == 1) {
      auto tm = env.bytes();
      if (!tm) return malformed();
      Reader t(*tm);
      uint32_t tf = 0, tw = 0;
      while (t.next(tf, tw)) {
        if (tw == 2 && (tf == 1 || tf == 2)) {
          auto b = t.bytes();
          if (!b) return malformed();
          (tf == 1 ? apiVersion : kind) = std::string(*b);
        } else if (!t.skip(tw)) {
          return malformed();
        }
      }
    } else if (w == 2 && f == 2) {
      auto b = env.bytes();
      if (!b) return malformed();
      raw = *b;
    } else if (!env.skip(w)) {
      return malformed();
    }
  }
  if (!env.ok()) return malformed();
  if (apiVersion != "v1" || (kind != "Namespace" && kind != "ConfigMap" && kind != "Secret")) {
    return Status::unsupportedMediaType(
        "protobuf bodies are accepted for v1 Namespace, ConfigMap and Secret only; send "
        "application/json for " + (apiVersion.empty() ? kind : apiVersion + " " + kind));
  }
  Json d(rapidjson::kObjectType);
  auto& a = d.GetAllocator();
  kube::setString(d, "apiVersion", apiVersion, a);
  kube::setString(d, "kind", kind, a);
  JsonValue& md = kube::ensureObject(d, "metadata", a);
  Reader r(raw);
  while (r.next(f, w)) {
    std::optional<std::string_view> b;
    if (w == 2) {
      b = r.bytes();
      if (!b) return malformed();
    }
    bool ok = true;
    if (f == 1 && b) {
      ok = decodeMeta(*b, md, a);
    } else if (kind == "ConfigMap" && b && (f == 2 || f == 3)) {
      ok = addMapEntry(d, f == 2 ? "data" : "binaryData", *b, f == 3, a);
    } else if (kind == "Secret" && b && (f == 2 || f == 4)) {
      ok = addMapEntry(d, f == 2 ? "data" : "stringData", *b, f == 2, a);
    } else if (kind == "Secret" && b && f == 3) {
      if (!b->empty()) kube::setString(d, "type", *b, a);
    } else if (kind == "Namespace" && b && f == 2) {
      Reader s(*b);
      uint32_t sf = 0, sw = 0;
      JsonValue& spec = kube::ensureObject(d, "spec", a);
      while (s.next(sf, sw)) {
        if (sf == 1 && sw == 2) {
          auto fin = s.bytes();
          if (!fin) return malformed();
          addToList(spec, "finalizers", *fin, a);
        } else if (!s.skip(sw)) {
          return malformed();
        }
      }
    } else if ((kind == "ConfigMap" && f == 4) || (kind == "Secret" && f == 5)) {
      if (w != 0) return malformed();
      auto v = r.varint();
      if (!v) return malformed();
      if (*v != 0) d.AddMember("immutable", true, a);
    } else if (!b && !r.skip(w)) {
      return malformed();
    }
    if (!ok) return malformed();
  }
  if (!r.ok()) return malformed();
  return d;
}

}  // namespace apiserver
