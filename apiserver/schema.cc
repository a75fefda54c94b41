#include "apiserver/schema.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <re2/re2.h>
#include <string_view>

#include "kube/timeutil.h"

namespace apiserver {

using kube::JsonAlloc;
using kube::JsonValue;

// ---------------------------------------------------------------------------------------------
// Go-compatible rendering

std::string formatGoFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "+Inf" : "-Inf";
  if (d == 0) return std::signbit(d) ? "-0" : "0";
  // Shortest digits that round-trip, as strconv.FormatFloat(d, 'g', -1, 64) finds them.
  char buf[64];
  int prec = 1;
  for (; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  // buf is "[-]D.DDDDe[+-]XX": split into digits and exponent.
  std::string s(buf);
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  size_t e = s.find('e');
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  int exp = std::atoi(s.c_str() + e + 1);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();

  std::string out = neg ? "-" : "";
  if (exp < -4 || exp >= 6) {
    out += digits[0];
    if (digits.size() > 1) {
      out += '.';
      out += digits.substr(1);
    }
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
    return out;
  }
  if (exp < 0) {
    out += "0.";
    out.append(static_cast<size_t>(-exp - 1), '0');
    out += digits;
    return out;
  }
  size_t intLen = static_cast<size_t>(exp) + 1;
  if (digits.size() <= intLen) {
    out += digits;
    out.append(intLen - digits.size(), '0');
  } else {
    out += digits.substr(0, intLen);
    out += '.';
    out += digits.substr(intLen);
  }
  return out;
}

std::string formatGoNumber(const JsonValue& n) {
  if (n.IsInt64()) return std::to_string(n.GetInt64());
  if (n.IsUint64()) return std::to_string(n.GetUint64());
  if (n.IsNumber()) return formatGoFloat(n.GetDouble());
  return "";
}

std::string goQuote(std::string_view s) {
  std::string out = "\"";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  char hex[8];
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\a':
        out += "\\a";
        ++i;
        continue;
      case '\b':
        out += "\\b";
        ++i;
        continue;
      case '\f':
        out += "\\f";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      case '\v':
        out += "\\v";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x20 || c == 0x7f) {
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
      ++i;
      continue;
    }
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // Multi-byte UTF-8: copy valid sequences, escape stray bytes as Go does.
    size_t len = (c >= 0xf0 && c < 0xf8) ? 4 : (c >= 0xe0) ? 3 : (c >= 0xc2 && c < 0xe0) ? 2 : 0;
    bool valid = len > 0 && i + len <= n;
    for (size_t k = 1; valid && k < len; ++k) valid = (p[i + k] & 0xc0) == 0x80;
    if (!valid) {
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
      ++i;
      continue;
    }
    out.append(s.substr(i, len));
    i += len;
  }
  out += '"';
  return out;
}

namespace {

// How field.Error prints a bad value taken from the object (strings quoted, numbers bare;
// composites, which Go prints with %#v, as compact JSON).
std::string renderValue(const JsonValue& v) {
  if (v.IsString()) return goQuote(kube::view(v));
  if (v.IsNumber()) return formatGoNumber(v);
  if (v.IsBool()) return v.GetBool() ? "true" : "false";
  if (v.IsNull()) return "\"null\"";
  return kube::toJson(v);
}

// The JSON type name kube-openapi infers for a value.
std::string_view jsonTypeName(const JsonValue& v) {
  if (v.IsObject()) return "object";
  if (v.IsArray()) return "array";
  if (v.IsString()) return "string";
  if (v.IsBool()) return "boolean";
  if (v.IsNull()) return "null";
  if (v.IsInt64() || v.IsUint64()) return "integer";
  return "number";
}

bool isInteger(const JsonValue& v) { return v.IsInt64() || v.IsUint64(); }

const JsonValue* member(const JsonValue& obj, std::string_view name) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(JsonValue(rapidjson::StringRef(name.data(), name.size())));
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

bool flag(const JsonValue& schema, std::string_view name) {
  const JsonValue* v = member(schema, name);
  return v && v->IsBool() && v->GetBool();
}

std::string_view stringMember(const JsonValue& schema, std::string_view name) {
  const JsonValue* v = member(schema, name);
  return v && v->IsString() ? kube::view(*v) : std::string_view();
}

const JsonValue* objectMember(const JsonValue& schema, std::string_view name) {
  const JsonValue* v = member(schema, name);
  return v && v->IsObject() ? v : nullptr;
}

std::optional<double> numberMember(const JsonValue& schema, std::string_view name) {
  const JsonValue* v = member(schema, name);
  if (!v || !v->IsNumber()) return std::nullopt;
  return v->GetDouble();
}

// Non-negative integer keyword (minLength, maxItems...).
std::optional<uint64_t> countMember(const JsonValue& schema, std::string_view name) {
  const JsonValue* v = member(schema, name);
  if (!v) return std::nullopt;
  if (v->IsUint64()) return v->GetUint64();
  if (v->IsDouble() && v->GetDouble() >= 0 && v->GetDouble() < 1.8e19 &&
      std::floor(v->GetDouble()) == v->GetDouble()) {
    return static_cast<uint64_t>(v->GetDouble());
  }
  return std::nullopt;
}

std::string childPath(const std::string& path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return path + "." + std::string(key);
}
std::string indexPath(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}
std::string keyPath(const std::string& path, std::string_view key) {
  return path + "[" + std::string(key) + "]";
}

size_t runeCount(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xc0) != 0x80) ++n;
  }
  return n;
}

JsonValue copyOf(const JsonValue& v, JsonAlloc& a) {
  JsonValue out;
  out.CopyFrom(v, a);
  return out;
}

bool isEmbedded(const JsonValue& schema, bool root) {
  return root || flag(schema, "x-kubernetes-embedded-resource");
}

bool isResourceEnvelope(std::string_view key) {
  return key == "apiVersion" || key == "kind" || key == "metadata";
}

// ---------------------------------------------------------------------------------------------
// Format checks (strfmt's registry, the formats CRDs use most)

bool isBase64(std::string_view s) {
  if (s.size() % 4 != 0) return false;
  size_t pad = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (c == '=') {
      if (i + 2 < s.size()) return false;
      ++pad;
    } else if (pad > 0 || !(alnum || c == '+' || c == '/')) {
      return false;
    }
  }
  return pad <= 2;
}

bool isDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9}) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  int month = (s[5] - '0') * 10 + (s[6] - '0');
  int day = (s[8] - '0') * 10 + (s[9] - '0');
  return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

bool isUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    char c = s[i];
    bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (dash ? c != '-' : !hex) return false;
  }
  return true;
}

// nullopt: the format is unknown (accepted, as strfmt does for unregistered formats).
std::optional<bool> stringMatchesFormat(std::string_view format, std::string_view s) {
  if (format == "date-time") return kube::parseTime(s).has_value() && s.size() >= 20;
  if (format == "date") return isDate(s);
  if (format == "byte") return isBase64(s);
  if (format == "uuid") return isUuid(s);
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Prune, default, validate

// A field path ("spec.groups[0].count") as a chain of nodes on the walker's stack, turned into
// text only when an error or a pruned field names it: building a string for every field visited
// was most of a validation's allocations.
class FieldPath {
 public:
  FieldPath() = default;  // the root: ""
  FieldPath child(std::string_view k) const { return {this, Kind::kChild, k, 0}; }
  FieldPath key(std::string_view k) const { return {this, Kind::kKey, k, 0}; }
  FieldPath index(size_t i) const { return {this, Kind::kIndex, {}, i}; }
  std::string str() const {
    if (parent_ == nullptr) return {};
    std::string p = parent_->str();
    switch (kind_) {
      case Kind::kChild: return p.empty() ? std::string(name_) : p + "." + std::string(name_);
      case Kind::kKey: return p + "[" + std::string(name_) + "]";
      case Kind::kIndex: return p + "[" + std::to_string(index_) + "]";
    }
    return p;
  }
  operator std::string() const { return str(); }  // NOLINT(google-explicit-constructor): errors take the text

 private:
  enum class Kind { kChild, kKey, kIndex };
  FieldPath(const FieldPath* parent, Kind kind, std::string_view name, size_t index)
      : parent_(parent), kind_(kind), name_(name), index_(index) {}
  const FieldPath* parent_ = nullptr;
  Kind kind_ = Kind::kChild;
  std::string_view name_;
  size_t index_ = 0;
};

class SchemaWalker {
 public:
  SchemaWalker(JsonAlloc& a, SchemaOutcome& out) : a_(a), out_(out) {}

  void prune(JsonValue& v, const JsonValue& schema, const FieldPath& path, int depth, bool root) {
    if (depth > kMaxSchemaDepth || !schema.IsObject()) return;
    if (v.IsObject()) {
      bool preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
      bool embedded = isEmbedded(schema, root);
      const JsonValue* props = objectMember(schema, "properties");
      const JsonValue* addl = member(schema, "additionalProperties");
      for (auto it = v.MemberBegin(); it != v.MemberEnd();) {
        std::string_view key = kube::view(it->name);
        if (embedded && isResourceEnvelope(key)) {
          // Always kept; apiVersion/kind still follow their schema if one is given.
          const JsonValue* sub = props ? member(*props, key) : nullptr;
          if (sub && key != "metadata")
            prune(it->value, *sub, path.child(key), depth + 1, false);
          ++it;
          continue;
        }
        const JsonValue* sub = props ? member(*props, key) : nullptr;
        if (sub) {
          prune(it->value, *sub, path.child(key), depth + 1, false);
        } else if (addl && addl->IsObject()) {
          prune(it->value, *addl, path.key(key), depth + 1, false);
        } else if (!preserve && !(addl && addl->IsBool() && addl->GetBool())) {
          out_.unknownFields.push_back(path.child(key));
          it = v.EraseMember(it);
          continue;
        }
        ++it;
      }
    } else if (v.IsArray()) {
      const JsonValue* items = objectMember(schema, "items");
      if (!items) return;
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        prune(v[i], *items, path.index(i), depth + 1, false);
      }
    }
  }

  void applyDefaults(JsonValue& v, const JsonValue& schema, int depth, bool root) {
    if (depth > kMaxSchemaDepth || !schema.IsObject()) return;
    if (v.IsObject()) {
      bool embedded = isEmbedded(schema, root);
      const JsonValue* props = objectMember(schema, "properties");
      if (props) {
        for (const auto& p : props->GetObject()) {
          std::string_view key = kube::view(p.name);
          if (embedded && key == "metadata") continue;
          if (!p.value.IsObject()) continue;
          auto it = v.FindMember(JsonValue(rapidjson::StringRef(key.data(), key.size())));
          const JsonValue* def = member(p.value, "default");
          if (it == v.MemberEnd()) {
            if (def) v.AddMember(kube::str(key, a_), copyOf(*def, a_), a_);
          } else if (it->value.IsNull() && !flag(p.value, "nullable")) {
            // Nulls in non-nullable fields are pruned before defaulting; a default fills them.
            if (def) {
              it->value = copyOf(*def, a_);
            } else {
              v.EraseMember(it);
            }
          }
        }
      }
      const JsonValue* addl = objectMember(schema, "additionalProperties");
      for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        std::string_view key = kube::view(it->name);
        if (embedded && key == "metadata") continue;
        const JsonValue* sub = props ? member(*props, key) : nullptr;
        if (!sub) sub = addl;
        if (!sub) continue;
        if (it->value.IsNull() && sub == addl && !flag(*sub, "nullable")) {
          if (const JsonValue* def = member(*sub, "default")) it->value = copyOf(*def, a_);
        }
        applyDefaults(it->value, *sub, depth + 1, false);
      }
    } else if (v.IsArray()) {
      const JsonValue* items = objectMember(schema, "items");
      if (!items) return;
      for (auto& e : v.GetArray()) {
        if (e.IsNull() && !flag(*items, "nullable")) {
          if (const JsonValue* def = member(*items, "default")) e = copyOf(*def, a_);
        }
        applyDefaults(e, *items, depth + 1, false);
      }
    }
  }

  void validate(const JsonValue& v, const JsonValue& schema, const FieldPath& path, int depth,
                bool root, std::vector<FieldError>& errs) {
    if (!schema.IsObject()) return;
    if (depth > kMaxSchemaDepth) {
      errs.push_back({path, "Invalid value", "",
                      "object nesting exceeds " + std::to_string(kMaxSchemaDepth) + " levels"});
      return;
    }
    std::string_view type = stringMember(schema, "type");
    bool intOrString = flag(schema, "x-kubernetes-int-or-string");

    if (v.IsNull()) {
      if (flag(schema, "nullable")) return;
      if (intOrString) {
        typeError(path, "integer,string", "null", errs);
      } else if (!type.empty()) {
        typeError(path, type, "null", errs);
      }
      return;
    }
    std::string_view actual = jsonTypeName(v);
    if (intOrString) {
      if (actual != "integer" && actual != "string") {
        typeError(path, "integer,string", actual, errs);
        return;
      }
    } else if (!type.empty() && type != actual && !(type == "number" && actual == "integer")) {
      typeError(path, type, actual, errs);
      return;
    }

    validateFormat(v, schema, path, errs);
    validateEnum(v, schema, path, errs);
    if (v.IsString()) validateString(v, schema, path, errs);
    if (v.IsNumber()) validateNumber(v, schema, path, errs);
    if (v.IsArray()) validateArray(v, schema, path, depth, errs);
    if (v.IsObject()) validateObject(v, schema, path, depth, root, errs);
    validateJunctors(v, schema, path, depth, errs);
  }

 private:
  static std::string displayName(const FieldPath& path) {
    std::string p = path.str();
    return p.empty() ? std::string(".") : p;
  }

  static void typeError(const FieldPath& path, std::string_view expected, std::string_view actual,
                        std::vector<FieldError>& errs) {
    std::string quoted = goQuote(actual);
    errs.push_back(
        {path, "Invalid value", quoted,
         displayName(path) + " in body must be of type " + std::string(expected) + ": " + quoted});
  }

  static void invalid(const FieldPath& path, std::string value, std::string detail,
                      std::vector<FieldError>& errs) {
    errs.push_back({path, "Invalid value", std::move(value), std::move(detail)});
  }

  void validateFormat(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                      std::vector<FieldError>& errs) {
    std::string_view format = stringMember(schema, "format");
    if (format.empty()) return;
    if (v.IsString()) {
      auto ok = stringMatchesFormat(format, kube::view(v));
      if (ok && !*ok) {
        std::string quoted = goQuote(kube::view(v));
        invalid(
            path, quoted,
            displayName(path) + " in body must be of type " + std::string(format) + ": " + quoted,
            errs);
      }
      return;
    }
    if (isInteger(v) && (format == "int32" || format == "int64")) {
      bool fits = format == "int32"
                      ? v.IsInt64() && v.GetInt64() >= std::numeric_limits<int32_t>::min() &&
                            v.GetInt64() <= std::numeric_limits<int32_t>::max()
                      : v.IsInt64();
      if (!fits) {
        std::string rendered = formatGoNumber(v);
        invalid(path, rendered,
                displayName(path) + " in body must be of type " + std::string(format) + ": " +
                    goQuote(rendered),
                errs);
      }
    }
  }

  static void validateEnum(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                           std::vector<FieldError>& errs) {
    const JsonValue* en = member(schema, "enum");
    if (!en || !en->IsArray() || en->Empty()) return;
    for (const auto& e : en->GetArray()) {
      if (e == v) return;
    }
    std::string detail = "supported values: ";
    bool first = true;
    for (const auto& e : en->GetArray()) {
      if (!first) detail += ", ";
      first = false;
      detail += goQuote(e.IsString() ? std::string(kube::view(e)) : kube::toJson(e));
    }
    errs.push_back({path, "Unsupported value", renderValue(v), detail});
  }

  void validateString(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                      std::vector<FieldError>& errs) {
    std::string_view s = kube::view(v);
    size_t len = runeCount(s);
    if (auto maxLen = countMember(schema, "maxLength"); maxLen && len > *maxLen) {
      errs.push_back({path, "Too long", "", "may not be longer than " + std::to_string(*maxLen)});
    }
    if (auto minLen = countMember(schema, "minLength"); minLen && len < *minLen) {
      invalid(path, goQuote(s),
              displayName(path) + " in body should be at least " + std::to_string(*minLen) +
                  " chars long",
              errs);
    }
    std::string_view pattern = stringMember(schema, "pattern");
    if (pattern.empty()) return;
    std::shared_ptr<const re2::RE2> re = compiled(pattern);
    if (!re) return;  // validateSchemaDefinition rejects such schemas; nothing to check here
    std::string detail = displayName(path) + " in body should match '" + std::string(pattern) + "'";
    if (s.size() > kMaxPatternInput) {
      invalid(path, goQuote(s.substr(0, 64)), detail + " (value too long to match)", errs);
      return;
    }
    // RE2, as Kubernetes uses: linear time, so a hostile pattern cannot stall a request.
    bool matched = re2::RE2::PartialMatch(re2::StringPiece(s.data(), s.size()), *re);
    if (!matched) invalid(path, goQuote(s), detail, errs);
  }

  // Compiled patterns are shared by every request (compiling one costs more than validating a
  // whole object). Bounded: the patterns come from CRDs, but a CRD can be rewritten at will.
  static std::shared_ptr<const re2::RE2> compiled(std::string_view pattern) {
    static std::mutex mu;
    static std::map<std::string, std::shared_ptr<const re2::RE2>, std::less<>> cache;
    std::lock_guard l(mu);
    auto it = cache.find(pattern);
    if (it == cache.end()) {
      if (cache.size() >= 4096) cache.clear();
      re2::RE2::Options opts;
      opts.set_log_errors(false);
      auto re = std::make_shared<re2::RE2>(re2::StringPiece(pattern.data(), pattern.size()), opts);
      it = cache.emplace(std::string(pattern), re->ok() ? std::move(re) : nullptr).first;
    }
    return it->second;
  }

  static void validateNumber(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                             std::vector<FieldError>& errs) {
    double x = v.GetDouble();
    bool intData = isInteger(v);
    auto bound = [&](double b) {
      // kube-openapi prints an integral bound as an integer when the data is an integer.
      if (intData && std::floor(b) == b && std::fabs(b) < 9.2e18) {
        return std::to_string(static_cast<int64_t>(b));
      }
      return formatGoFloat(b);
    };
    if (auto mx = numberMember(schema, "maximum")) {
      bool exclusive = flag(schema, "exclusiveMaximum");
      if (exclusive ? x >= *mx : x > *mx) {
        invalid(path, formatGoNumber(v),
                displayName(path) + " in body should be less than " +
                    (exclusive ? "" : "or equal to ") + bound(*mx),
                errs);
      }
    }
    if (auto mn = numberMember(schema, "minimum")) {
      bool exclusive = flag(schema, "exclusiveMinimum");
      if (exclusive ? x <= *mn : x < *mn) {
        invalid(path, formatGoNumber(v),
                displayName(path) + " in body should be greater than " +
                    (exclusive ? "" : "or equal to ") + bound(*mn),
                errs);
      }
    }
    if (auto mult = numberMember(schema, "multipleOf"); mult && *mult > 0) {
      double q = x / *mult;
      if (std::fabs(q - std::round(q)) > 1e-9) {
        invalid(path, formatGoNumber(v),
                displayName(path) + " in body should be a multiple of " + bound(*mult), errs);
      }
    }
  }

  // The identity of a list-type=map element: its key fields, printed the way Go's %#v prints the
  // map[string]interface{} k8s builds from them.
  static std::optional<std::string> mapKeyOf(const JsonValue& e, const JsonValue& keys) {
    if (!e.IsObject()) return std::nullopt;
    std::vector<std::pair<std::string, std::string>> parts;
    for (const auto& k : keys.GetArray()) {
      if (!k.IsString()) continue;
      const JsonValue* f = member(e, kube::view(k));
      std::string rendered = !f              ? "<nil>"
                             : f->IsString() ? goQuote(kube::view(*f))
                             : f->IsNumber() ? formatGoNumber(*f)
                                             : kube::toJson(*f);
      parts.emplace_back(std::string(kube::view(k)), rendered);
    }
    std::sort(parts.begin(), parts.end());
    std::string out = "map[string]interface {}{";
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i) out += ", ";
      out += goQuote(parts[i].first) + ":" + parts[i].second;
    }
    return out + "}";
  }

  void validateArray(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                     int depth, std::vector<FieldError>& errs) {
    size_t n = v.Size();
    if (auto maxItems = countMember(schema, "maxItems"); maxItems && n > *maxItems) {
      errs.push_back({path, "Too many", std::to_string(n),
                      "must have at most " + std::to_string(*maxItems) + " items"});
    }
    if (auto minItems = countMember(schema, "minItems"); minItems && n < *minItems) {
      invalid(path, std::to_string(n),
              displayName(path) + " in body should have at least " + std::to_string(*minItems) +
                  " items",
              errs);
    }
    if (flag(schema, "uniqueItems")) {
      bool dup = false;
      for (size_t i = 0; i < n && !dup; ++i) {
        for (size_t j = i + 1; j < n && !dup; ++j) {
          dup = v[static_cast<rapidjson::SizeType>(i)] == v[static_cast<rapidjson::SizeType>(j)];
        }
      }
      if (dup) {
        invalid(path, "\"\"", displayName(path) + " in body shouldn't contain duplicates", errs);
      }
    }
    std::string_view listType = stringMember(schema, "x-kubernetes-list-type");
    if (listType == "set") {
      for (size_t i = 1; i < n; ++i) {
        for (size_t j = 0; j < i; ++j) {
          if (v[static_cast<rapidjson::SizeType>(i)] == v[static_cast<rapidjson::SizeType>(j)]) {
            errs.push_back({path.index(i), "Duplicate value",
                            renderValue(v[static_cast<rapidjson::SizeType>(i)]), ""});
            break;
          }
        }
      }
    } else if (listType == "map") {
      const JsonValue* keys = member(schema, "x-kubernetes-list-map-keys");
      if (keys && keys->IsArray()) {
        std::map<std::string, size_t> seen;
        for (size_t i = 0; i < n; ++i) {
          auto key = mapKeyOf(v[static_cast<rapidjson::SizeType>(i)], *keys);
          if (!key) continue;
          if (!seen.emplace(*key, i).second) {
            errs.push_back({path.index(i), "Duplicate value", *key, ""});
          }
        }
      }
    }
    if (const JsonValue* items = objectMember(schema, "items")) {
      for (size_t i = 0; i < n; ++i) {
        validate(v[static_cast<rapidjson::SizeType>(i)], *items, path.index(i), depth + 1,
                 false, errs);
      }
    }
  }

  void validateObject(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                      int depth, bool root, std::vector<FieldError>& errs) {
    bool embedded = isEmbedded(schema, root);
    size_t n = v.MemberCount();
    if (auto maxP = countMember(schema, "maxProperties"); maxP && n > *maxP) {
      errs.push_back({path, "Too many", std::to_string(n),
                      "must have at most " + std::to_string(*maxP) + " items"});
    }
    if (auto minP = countMember(schema, "minProperties"); minP && n < *minP) {
      invalid(path, std::to_string(n),
              displayName(path) + " in body should have at least " + std::to_string(*minP) +
                  " properties",
              errs);
    }
    if (const JsonValue* req = member(schema, "required"); req && req->IsArray()) {
      for (const auto& r : req->GetArray()) {
        if (!r.IsString()) continue;
        if (!member(v, kube::view(r))) {
          errs.push_back({path.child(kube::view(r)), "Required value", "", ""});
        }
      }
    }
    if (embedded) validateEnvelope(v, path, root, errs);

    const JsonValue* props = objectMember(schema, "properties");
    const JsonValue* addl = member(schema, "additionalProperties");
    for (const auto& m : v.GetObject()) {
      std::string_view key = kube::view(m.name);
      if (embedded && key == "metadata") continue;
      const JsonValue* sub = props ? member(*props, key) : nullptr;
      if (sub) {
        validate(m.value, *sub, path.child(key), depth + 1, false, errs);
      } else if (addl && addl->IsObject()) {
        validate(m.value, *addl, path.key(key), depth + 1, false, errs);
      } else if (addl && addl->IsBool() && !addl->GetBool() &&
                 !(embedded && isResourceEnvelope(key))) {
        invalid(path, goQuote(key),
                childPath(displayName(path), key) + " in body is a forbidden property", errs);
      }
    }
  }

  // apiVersion/kind/metadata of the root object or an embedded resource.
  static void validateEnvelope(const JsonValue& v, const FieldPath& path, bool root,
                               std::vector<FieldError>& errs) {
    if (const JsonValue* meta = member(v, "metadata")) {
      FieldPath metaPath = path.child("metadata");
      if (!meta->IsObject()) {
        typeError(metaPath, "object", jsonTypeName(*meta), errs);
      } else {
        for (std::string_view f : {"name", "generateName"}) {
          const JsonValue* fv = member(*meta, f);
          if (fv && !fv->IsString())
            typeError(metaPath.child(f), "string", jsonTypeName(*fv), errs);
        }
      }
    }
    if (root) return;  // the server checks the root's apiVersion/kind against the URL
    for (std::string_view f : {"apiVersion", "kind"}) {
      const JsonValue* fv = member(v, f);
      if (!fv || (fv->IsString() && fv->GetStringLength() == 0)) {
        errs.push_back({path.child(f), "Required value", "", "must not be empty"});
      } else if (!fv->IsString()) {
        typeError(path.child(f), "string", jsonTypeName(*fv), errs);
      }
    }
  }

  void validateJunctors(const JsonValue& v, const JsonValue& schema, const FieldPath& path,
                        int depth, std::vector<FieldError>& errs) {
    auto quotedName = [&] { return goQuote(displayName(path)); };  // only for errors: paths are lazy
    if (const JsonValue* allOf = member(schema, "allOf"); allOf && allOf->IsArray()) {
      for (const auto& s : allOf->GetArray()) validate(v, s, path, depth + 1, false, errs);
    }
    auto branchErrors = [&](const JsonValue& s) {
      std::vector<FieldError> local;
      validate(v, s, path, depth + 1, false, local);
      return local;
    };
    if (const JsonValue* anyOf = member(schema, "anyOf");
        anyOf && anyOf->IsArray() && !anyOf->Empty()) {
      std::optional<std::vector<FieldError>> best;
      bool matched = false;
      for (const auto& s : anyOf->GetArray()) {
        auto local = branchErrors(s);
        if (local.empty()) {
          matched = true;
          break;
        }
        if (!best || local.size() < best->size()) best = std::move(local);
      }
      if (!matched) {
        invalid(path, "\"\"", quotedName() + " must validate at least one schema (anyOf)", errs);
        errs.insert(errs.end(), best->begin(), best->end());
      }
    }
    if (const JsonValue* oneOf = member(schema, "oneOf");
        oneOf && oneOf->IsArray() && !oneOf->Empty()) {
      std::optional<std::vector<FieldError>> best;
      int valid = 0;
      for (const auto& s : oneOf->GetArray()) {
        auto local = branchErrors(s);
        if (local.empty()) {
          ++valid;
        } else if (!best || local.size() < best->size()) {
          best = std::move(local);
        }
      }
      if (valid == 0) {
        invalid(path, "\"\"",
                quotedName() + " must validate one and only one schema (oneOf). Found none valid",
                errs);
        errs.insert(errs.end(), best->begin(), best->end());
      } else if (valid > 1) {
        invalid(path, "\"\"",
                quotedName() + " must validate one and only one schema (oneOf). Found " +
                    std::to_string(valid) + " valid alternatives",
                errs);
      }
    }
    if (const JsonValue* no = objectMember(schema, "not")) {
      if (branchErrors(*no).empty()) {
        invalid(path, "\"\"", quotedName() + " must not validate the schema (not)", errs);
      }
    }
  }

  JsonAlloc& a_;
  SchemaOutcome& out_;
};

// ---------------------------------------------------------------------------------------------
// Schema definition checks

class DefinitionChecker {
 public:
  std::vector<FieldError> errors;

  void check(const JsonValue& s, const std::string& path, int depth, bool root, bool typeRequired) {
    if (depth > kMaxSchemaDepth) {
      add(path, "Invalid value", "",
          "schema nesting exceeds " + std::to_string(kMaxSchemaDepth) + " levels");
      return;
    }
    if (!s.IsObject()) {
      add(path, "Invalid value", "", "must be a schema object");
      return;
    }
    const JsonValue* type = member(s, "type");
    if (type) {
      static constexpr std::string_view kTypes[] = {"object",  "array",  "string",
                                                    "integer", "number", "boolean"};
      if (!type->IsString()) {
        add(childPath(path, "type"), "Invalid value", "", "must be a string");
      } else if (std::find(std::begin(kTypes), std::end(kTypes), kube::view(*type)) ==
                 std::end(kTypes)) {
        add(childPath(path, "type"), "Unsupported value", goQuote(kube::view(*type)),
            "supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", "
            "\"string\"");
      }
    }
    std::string_view typeName = type && type->IsString() ? kube::view(*type) : "";
    bool intOrString = flag(s, "x-kubernetes-int-or-string");
    bool preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    if (root && typeName != "object") {
      if (typeName.empty()) {
        add(childPath(path, "type"), "Required value", "", "must not be empty at the root");
      } else {
        add(childPath(path, "type"), "Invalid value", goQuote(typeName),
            "must be object at the root");
      }
    } else if (typeRequired && typeName.empty() && !intOrString && !preserve) {
      add(childPath(path, "type"), "Required value", "",
          "must not be empty for specified object fields");
    }

    for (std::string_view k : {"nullable", "uniqueItems", "exclusiveMinimum", "exclusiveMaximum",
                               "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
                               "x-kubernetes-embedded-resource"}) {
      if (const JsonValue* v = member(s, k); v && !v->IsBool()) {
        add(childPath(path, k), "Invalid value", "", "must be a boolean");
      }
    }
    for (std::string_view k : {"minimum", "maximum", "multipleOf"}) {
      if (const JsonValue* v = member(s, k); v && !v->IsNumber()) {
        add(childPath(path, k), "Invalid value", "", "must be a number");
      }
    }
    for (std::string_view k :
         {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}) {
      if (const JsonValue* v = member(s, k); v && !countMember(s, k)) {
        add(childPath(path, k), "Invalid value", v->IsNumber() ? formatGoNumber(*v) : "",
            "must be a non-negative integer");
      }
    }
    for (std::string_view k : {"format", "description", "title", "x-kubernetes-map-type"}) {
      if (const JsonValue* v = member(s, k); v && !v->IsString()) {
        add(childPath(path, k), "Invalid value", "", "must be a string");
      }
    }
    if (const JsonValue* p = member(s, "pattern")) {
      if (!p->IsString()) {
        add(childPath(path, "pattern"), "Invalid value", "", "must be a string");
      } else {
        re2::RE2::Options opts;
        opts.set_log_errors(false);
        re2::RE2 re(re2::StringPiece(p->GetString(), p->GetStringLength()), opts);
        if (!re.ok()) {
          add(childPath(path, "pattern"), "Invalid value", goQuote(kube::view(*p)),
              "must be a valid regular expression, but isn't: " + re.error());
        }
      }
    }
    if (const JsonValue* r = member(s, "required")) {
      bool ok = r->IsArray();
      if (ok) {
        for (const auto& e : r->GetArray()) ok = ok && e.IsString();
      }
      if (!ok) add(childPath(path, "required"), "Invalid value", "", "must be a list of strings");
    }
    if (const JsonValue* e = member(s, "enum"); e && !e->IsArray()) {
      add(childPath(path, "enum"), "Invalid value", "", "must be a list");
    }

    const JsonValue* props = member(s, "properties");
    if (props) {
      if (!props->IsObject()) {
        add(childPath(path, "properties"), "Invalid value", "", "must be an object of schemas");
      } else {
        for (const auto& p : props->GetObject()) {
          check(p.value, keyPath(childPath(path, "properties"), kube::view(p.name)), depth + 1,
                false, typeRequired);
        }
      }
    }
    if (const JsonValue* addl = member(s, "additionalProperties")) {
      if (addl->IsObject()) {
        if (props) {
          add(childPath(path, "additionalProperties"), "Forbidden", "",
              "additionalProperties and properties are mutual exclusive");
        }
        check(*addl, childPath(path, "additionalProperties"), depth + 1, false, typeRequired);
      } else if (!addl->IsBool()) {
        add(childPath(path, "additionalProperties"), "Invalid value", "",
            "must be a boolean or a schema object");
      }
    }
    if (const JsonValue* items = member(s, "items")) {
      if (items->IsArray()) {
        add(childPath(path, "items"), "Forbidden", "",
            "items must be a schema object and not an array");
      } else {
        check(*items, childPath(path, "items"), depth + 1, false, typeRequired);
      }
    } else if (typeName == "array" && typeRequired) {
      add(childPath(path, "items"), "Required value", "", "must be specified");
    }
    for (std::string_view k : {"allOf", "anyOf", "oneOf"}) {
      const JsonValue* list = member(s, k);
      if (!list) continue;
      if (!list->IsArray()) {
        add(childPath(path, k), "Invalid value", "", "must be a list of schemas");
        continue;
      }
      for (rapidjson::SizeType i = 0; i < list->Size(); ++i) {
        check((*list)[i], indexPath(childPath(path, k), i), depth + 1, false, false);
      }
    }
    if (const JsonValue* no = member(s, "not")) {
      check(*no, childPath(path, "not"), depth + 1, false, false);
    }
    if (const JsonValue* lt = member(s, "x-kubernetes-list-type")) {
      std::string_view v = kube::view(*lt);
      if (!lt->IsString() || (v != "atomic" && v != "set" && v != "map")) {
        add(childPath(path, "x-kubernetes-list-type"), "Unsupported value",
            lt->IsString() ? goQuote(v) : "", "supported values: \"atomic\", \"map\", \"set\"");
      } else if (v == "map") {
        const JsonValue* keys = member(s, "x-kubernetes-list-map-keys");
        bool ok = keys && keys->IsArray() && !keys->Empty();
        if (ok) {
          for (const auto& k : keys->GetArray()) ok = ok && k.IsString();
        }
        if (!ok) {
          add(childPath(path, "x-kubernetes-list-map-keys"), "Required value", "",
              "must not be empty if x-kubernetes-list-type is map");
        }
      }
    }
  }

 private:
  void add(std::string field, std::string type, std::string value, std::string detail) {
    errors.push_back({std::move(field), std::move(type), std::move(value), std::move(detail)});
  }
};

}  // namespace

std::string FieldError::toString() const {
  std::string s = field + ": " + type;
  bool omitValue = type == "Required value" || type == "Forbidden" || type == "Too long";
  if (!omitValue && !value.empty()) s += ": " + value;
  if (!detail.empty()) s += ": " + detail;
  return s;
}

std::string joinFieldErrors(const std::vector<FieldError>& errors) {
  if (errors.size() == 1) return errors[0].toString();
  std::string out = "[";
  for (size_t i = 0; i < errors.size(); ++i) {
    if (i) out += ", ";
    out += errors[i].toString();
  }
  return out + "]";
}

SchemaOutcome applySchema(JsonValue& object, const JsonValue& openAPIV3Schema, JsonAlloc& a) {
  SchemaOutcome out;
  if (!openAPIV3Schema.IsObject()) return out;
  SchemaWalker walker(a, out);
  walker.prune(object, openAPIV3Schema, FieldPath(), 0, true);
  walker.applyDefaults(object, openAPIV3Schema, 0, true);
  walker.validate(object, openAPIV3Schema, FieldPath(), 0, true, out.errors);
  return out;
}

kube::Status validateSchemaDefinition(const JsonValue& openAPIV3Schema) {
  DefinitionChecker checker;
  checker.check(openAPIV3Schema, "openAPIV3Schema", 0, true, true);
  if (checker.errors.empty()) return kube::Status::ok();
  return kube::Status::invalid(joinFieldErrors(checker.errors));
}

}  // namespace apiserver
