#include "apiserver/table.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>

#include "apiserver/schema.h"

namespace apiserver {

using kube::JsonAlloc;
using kube::JsonValue;
using kube::Status;

namespace {

// Paths are tiny in practice; the bound keeps a hostile column definition from recursing deep
// through nested filters.
constexpr int kMaxFilterNesting = 8;
constexpr size_t kMaxPathLength = 4096;

struct Literal {
  enum class Kind { kString, kNumber, kBool, kNull } kind = Kind::kNull;
  std::string s;
  double d = 0;
  bool b = false;
};

struct Step {
  enum class Kind { kField, kWildcard, kIndex, kSlice, kFilter } kind = Kind::kField;
  std::string field;
  long index = 0;
  std::optional<long> start;
  std::optional<long> end;
  std::vector<Step> filterPath;  // relative to @
  std::string op;                // empty: existence test
  Literal literal;
};

Step wildcardStep() {
  Step st;
  st.kind = Step::Kind::kWildcard;
  return st;
}

class PathParser {
 public:
  PathParser(std::string_view text, int nesting) : s_(text), nesting_(nesting) {}

  Status parse(std::vector<Step>& out) {
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == '.') {
        ++pos_;
        if (pos_ >= s_.size()) break;  // trailing "." (".", "{.}") selects the current node
        if (s_[pos_] == '.') return fail("recursive descent (..) is not supported");
        if (s_[pos_] == '[') continue;
        if (s_[pos_] == '*') {
          ++pos_;
          out.push_back(wildcardStep());
          continue;
        }
        size_t start = pos_;
        while (pos_ < s_.size() && s_[pos_] != '.' && s_[pos_] != '[') {
          char f = s_[pos_];
          if (std::isspace(static_cast<unsigned char>(f)) || f == ']' || f == '(' || f == ')' ||
              f == '{' || f == '}' || f == '"' || f == '\'') {
            return fail(std::string("unexpected character '") + f + "' in field name");
          }
          ++pos_;
        }
        Step st;
        st.field = std::string(s_.substr(start, pos_ - start));
        out.push_back(std::move(st));
      } else if (c == '[') {
        Status s = parseBracket(out);
        if (!s.isOk()) return s;
      } else {
        return fail(std::string("unexpected character '") + c + "'");
      }
    }
    return Status::ok();
  }

 private:
  Status fail(const std::string& why) const {
    return Status::badRequest("invalid JSONPath at offset " + std::to_string(pos_) + ": " + why);
  }

  static bool parseLong(std::string_view t, long& out) {
    if (t.empty() || t.size() > 18) return false;
    size_t i = (t[0] == '-' || t[0] == '+') ? 1 : 0;
    if (i == t.size()) return false;
    long v = 0;
    for (; i < t.size(); ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      v = v * 10 + (t[i] - '0');
    }
    out = t[0] == '-' ? -v : v;
    return true;
  }

  static std::string_view trim(std::string_view t) {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
    return t;
  }

  // Reads a quoted string starting at s_[pos_] (a quote); pos_ ends after the closing quote.
  bool readQuoted(std::string& out) {
    char q = s_[pos_++];
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out.push_back(s_[pos_++]);
    }
    if (pos_ >= s_.size()) return false;
    ++pos_;
    return true;
  }

  Status parseBracket(std::vector<Step>& out) {
    ++pos_;  // '['
    if (pos_ >= s_.size()) return fail("unterminated [");
    char c = s_[pos_];
    if (c == '\'' || c == '"') {
      Step st;
      if (!readQuoted(st.field)) return fail("unterminated quoted name");
      if (pos_ >= s_.size() || s_[pos_] != ']') return fail("expected ] after quoted name");
      ++pos_;
      out.push_back(std::move(st));
      return Status::ok();
    }
    if (c == '?') return parseFilter(out);
    size_t close = s_.find(']', pos_);
    if (close == std::string_view::npos) return fail("unterminated [");
    std::string_view inner = trim(s_.substr(pos_, close - pos_));
    pos_ = close + 1;
    if (inner == "*") {
      out.push_back(wildcardStep());
      return Status::ok();
    }
    size_t colon = inner.find(':');
    Step st;
    if (colon == std::string_view::npos) {
      st.kind = Step::Kind::kIndex;
      if (!parseLong(inner, st.index))
        return fail("invalid array index \"" + std::string(inner) + "\"");
    } else {
      st.kind = Step::Kind::kSlice;
      std::string_view a = trim(inner.substr(0, colon));
      std::string_view b = trim(inner.substr(colon + 1));
      if (b.find(':') != std::string_view::npos) return fail("slice steps are not supported");
      long v = 0;
      if (!a.empty()) {
        if (!parseLong(a, v)) return fail("invalid slice start");
        st.start = v;
      }
      if (!b.empty()) {
        if (!parseLong(b, v)) return fail("invalid slice end");
        st.end = v;
      }
    }
    out.push_back(std::move(st));
    return Status::ok();
  }

  Status parseFilter(std::vector<Step>& out) {
    if (nesting_ >= kMaxFilterNesting) return fail("filters nested too deep");
    ++pos_;  // '?'
    if (pos_ >= s_.size() || s_[pos_] != '(') return fail("expected ( after ?");
    ++pos_;
    // Find the matching ')' outside quotes.
    size_t start = pos_;
    int depth = 1;
    char quote = 0;
    for (; pos_ < s_.size(); ++pos_) {
      char c = s_[pos_];
      if (quote) {
        if (c == '\\') {
          ++pos_;
        } else if (c == quote) {
          quote = 0;
        }
      } else if (c == '\'' || c == '"') {
        quote = c;
      } else if (c == '(') {
        ++depth;
      } else if (c == ')' && --depth == 0) {
        break;
      }
    }
    if (pos_ >= s_.size()) return fail("unterminated filter");
    std::string_view expr = s_.substr(start, pos_ - start);
    ++pos_;  // ')'
    if (pos_ >= s_.size() || s_[pos_] != ']') return fail("expected ] after filter");
    ++pos_;

    Step st;
    st.kind = Step::Kind::kFilter;
    // Split at the first comparison operator outside quotes.
    size_t opAt = std::string_view::npos;
    size_t opLen = 0;
    quote = 0;
    for (size_t i = 0; i < expr.size(); ++i) {
      char c = expr[i];
      if (quote) {
        if (c == quote) quote = 0;
        continue;
      }
      if (c == '\'' || c == '"') {
        quote = c;
        continue;
      }
      if (c == '=' || c == '!' || c == '<' || c == '>') {
        opAt = i;
        opLen = (i + 1 < expr.size() && expr[i + 1] == '=') ? 2 : 1;
        break;
      }
    }
    std::string_view lhs = trim(expr.substr(0, opAt));
    if (lhs.empty() || lhs[0] != '@') return fail("filter must start with @");
    PathParser sub(lhs.substr(1), nesting_ + 1);
    if (Status s = sub.parse(st.filterPath); !s.isOk()) return s;
    if (opAt != std::string_view::npos) {
      st.op = std::string(expr.substr(opAt, opLen));
      if (st.op == "=" || st.op == "!") return fail("unknown operator \"" + st.op + "\"");
      std::string_view rhs = trim(expr.substr(opAt + opLen));
      if (rhs.empty()) return fail("filter needs a value after " + st.op);
      if (rhs[0] == '\'' || rhs[0] == '"') {
        if (rhs.size() < 2 || rhs.back() != rhs[0]) return fail("unterminated string in filter");
        st.literal.kind = Literal::Kind::kString;
        st.literal.s = std::string(rhs.substr(1, rhs.size() - 2));
      } else if (rhs == "true" || rhs == "false") {
        st.literal.kind = Literal::Kind::kBool;
        st.literal.b = rhs == "true";
      } else if (rhs == "null" || rhs == "nil") {
        st.literal.kind = Literal::Kind::kNull;
      } else {
        std::string num(rhs);
        char* end = nullptr;
        double d = std::strtod(num.c_str(), &end);
        if (num.empty() || end != num.c_str() + num.size() || !std::isfinite(d)) {
          return fail("invalid value \"" + num + "\" in filter");
        }
        st.literal.kind = Literal::Kind::kNumber;
        st.literal.d = d;
      }
    }
    out.push_back(std::move(st));
    return Status::ok();
  }

  std::string_view s_;
  size_t pos_ = 0;
  int nesting_;
};

Status parsePath(std::string_view path, std::vector<Step>& steps) {
  if (path.size() > kMaxPathLength) return Status::badRequest("JSONPath too long");
  std::string_view p = path;
  while (!p.empty() && std::isspace(static_cast<unsigned char>(p.front()))) p.remove_prefix(1);
  while (!p.empty() && std::isspace(static_cast<unsigned char>(p.back()))) p.remove_suffix(1);
  if (!p.empty() && p.front() == '{') {
    if (p.back() != '}') return Status::badRequest("invalid JSONPath: unclosed {");
    p = p.substr(1, p.size() - 2);
  }
  if (!p.empty() && p.front() == '$') p.remove_prefix(1);
  if (p.empty()) return Status::badRequest("invalid JSONPath: empty path");
  if (p.front() != '.' && p.front() != '[') {
    return Status::badRequest("invalid JSONPath \"" + std::string(path) +
                              "\": must start with . or [");
  }
  return PathParser(p, 0).parse(steps);
}

bool compare(const JsonValue& v, const std::string& op, const Literal& lit) {
  int cmp = 0;
  bool comparable = false;
  switch (lit.kind) {
    case Literal::Kind::kString:
      if (v.IsString()) {
        cmp = kube::view(v).compare(lit.s);
        comparable = true;
      }
      break;
    case Literal::Kind::kNumber:
      if (v.IsNumber()) {
        double d = v.GetDouble();
        cmp = d < lit.d ? -1 : d > lit.d ? 1 : 0;
        comparable = true;
      }
      break;
    case Literal::Kind::kBool:
      if (v.IsBool()) {
        cmp = static_cast<int>(v.GetBool()) - static_cast<int>(lit.b);
        comparable = true;
      }
      break;
    case Literal::Kind::kNull:
      comparable = v.IsNull();
      break;
  }
  if (op == "==") return comparable && cmp == 0;
  if (op == "!=") return !comparable || cmp != 0;
  if (!comparable || lit.kind == Literal::Kind::kNull || lit.kind == Literal::Kind::kBool) {
    return false;
  }
  if (op == "<") return cmp < 0;
  if (op == "<=") return cmp <= 0;
  if (op == ">") return cmp > 0;
  if (op == ">=") return cmp >= 0;
  return false;
}

void evalSteps(const JsonValue& root, const std::vector<Step>& steps,
               std::vector<const JsonValue*>& out) {
  std::vector<const JsonValue*> cur{&root};
  for (const Step& st : steps) {
    std::vector<const JsonValue*> next;
    for (const JsonValue* v : cur) {
      switch (st.kind) {
        case Step::Kind::kField:
          if (v->IsObject()) {
            auto it =
                v->FindMember(JsonValue(rapidjson::StringRef(st.field.data(), st.field.size())));
            if (it != v->MemberEnd()) next.push_back(&it->value);
          }
          break;
        case Step::Kind::kWildcard:
          if (v->IsObject()) {
            for (const auto& m : v->GetObject()) next.push_back(&m.value);
          } else if (v->IsArray()) {
            for (const auto& e : v->GetArray()) next.push_back(&e);
          }
          break;
        case Step::Kind::kIndex:
          if (v->IsArray()) {
            long n = static_cast<long>(v->Size());
            long i = st.index < 0 ? n + st.index : st.index;
            if (i >= 0 && i < n) next.push_back(&(*v)[static_cast<rapidjson::SizeType>(i)]);
          }
          break;
        case Step::Kind::kSlice:
          if (v->IsArray()) {
            long n = static_cast<long>(v->Size());
            auto clamp = [n](long x) { return x < 0 ? std::max(0L, n + x) : std::min(n, x); };
            long b = st.start ? clamp(*st.start) : 0;
            long e = st.end ? clamp(*st.end) : n;
            for (long i = b; i < e; ++i) next.push_back(&(*v)[static_cast<rapidjson::SizeType>(i)]);
          }
          break;
        case Step::Kind::kFilter:
          if (v->IsArray()) {
            for (const auto& e : v->GetArray()) {
              std::vector<const JsonValue*> found;
              evalSteps(e, st.filterPath, found);
              bool keep = st.op.empty() ? !found.empty()
                                        : !found.empty() && compare(*found[0], st.op, st.literal);
              if (keep) next.push_back(&e);
            }
          }
          break;
      }
    }
    cur = std::move(next);
    if (cur.empty()) break;
  }
  out.insert(out.end(), cur.begin(), cur.end());
}

}  // namespace

kube::StatusOr<std::vector<const JsonValue*>> evalJsonPath(const JsonValue& obj,
                                                           std::string_view path) {
  std::vector<Step> steps;
  if (Status s = parsePath(path, steps); !s.isOk()) return s;
  std::vector<const JsonValue*> out;
  evalSteps(obj, steps, out);
  return out;
}

Status validateJsonPath(std::string_view path) {
  std::vector<Step> steps;
  Status s = parsePath(path, steps);
  if (!s.isOk()) return Status::invalid(s.message());
  return Status::ok();
}

std::string humanDuration(std::chrono::nanoseconds d) {
  using std::chrono::duration_cast;
  int64_t seconds = duration_cast<std::chrono::seconds>(d).count();  // truncates toward zero
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < int64_t{60} * 2) return std::to_string(seconds) + "s";
  int64_t minutes = duration_cast<std::chrono::minutes>(d).count();
  if (minutes < 10) {
    int64_t s = seconds % 60;
    if (s == 0) return std::to_string(minutes) + "m";
    return std::to_string(minutes) + "m" + std::to_string(s) + "s";
  }
  if (minutes < int64_t{60} * 3) return std::to_string(minutes) + "m";
  int64_t hours = duration_cast<std::chrono::hours>(d).count();
  if (hours < 8) {
    int64_t m = minutes % 60;
    if (m == 0) return std::to_string(hours) + "h";
    return std::to_string(hours) + "h" + std::to_string(m) + "m";
  }
  if (hours < 48) return std::to_string(hours) + "h";
  if (hours < int64_t{24} * 8) {
    int64_t h = hours % 24;
    if (h == 0) return std::to_string(hours / 24) + "d";
    return std::to_string(hours / 24) + "d" + std::to_string(h) + "h";
  }
  if (hours < int64_t{24} * 365 * 2) return std::to_string(hours / 24) + "d";
  if (hours < int64_t{24} * 365 * 8) {
    int64_t dy = (hours / 24) % 365;
    if (dy == 0) return std::to_string(hours / 24 / 365) + "y";
    return std::to_string(hours / 24 / 365) + "y" + std::to_string(dy) + "d";
  }
  return std::to_string(hours / 24 / 365) + "y";
}

namespace {

// metav1.Time.UnmarshalQueryParameter: "" and "null" are the zero time, which ages render as
// "<unknown>"; anything else must parse as RFC 3339.
std::optional<std::string> ageOf(std::string_view ts, kube::TimePoint now) {
  if (ts.empty() || ts == "null") return std::string("<unknown>");
  auto t = kube::parseTime(ts);
  if (!t) return std::nullopt;
  return humanDuration(std::chrono::duration_cast<std::chrono::nanoseconds>(now - *t));
}

// Out of line on purpose: GCC 12 inlines RapidJSON's short-string copy of a literal and then
// warns (-Wstringop-overflow) about a write it cannot prove in bounds.
[[gnu::noinline]] JsonValue textCell(std::string_view s, JsonAlloc& a) { return kube::str(s, a); }

}  // namespace

std::string translateTimestampSince(const JsonValue* ts, kube::TimePoint now) {
  if (!ts || !ts->IsString()) return "<unknown>";
  auto age = ageOf(kube::view(*ts), now);
  return age ? *age : "<unknown>";
}

JsonValue printerCell(const std::vector<const JsonValue*>& values, std::string_view type,
                      std::string_view /*format*/, kube::TimePoint now, JsonAlloc& a) {
  if (values.empty() || !values[0] || values[0]->IsNull()) return JsonValue();
  const JsonValue& v = *values[0];
  if (type == "integer") {
    if (v.IsInt64()) return JsonValue(v.GetInt64());
    if (v.IsNumber()) {
      // Go's int64(float64) on a JSON number; values that do not fit have no sane cell.
      double d = v.GetDouble();
      if (std::isfinite(d) && d > -9.2e18 && d < 9.2e18) {
        return JsonValue(static_cast<int64_t>(d));
      }
    }
    return JsonValue();
  }
  if (type == "number") {
    if (v.IsNumber()) return JsonValue(v.GetDouble());
    return JsonValue();
  }
  if (type == "boolean") {
    if (v.IsBool()) return JsonValue(v.GetBool());
    return JsonValue();
  }
  if (type == "date") {
    if (!v.IsString()) return JsonValue();
    auto age = ageOf(kube::view(v), now);
    return textCell(age ? *age : "<invalid>", a);
  }
  if (type == "string") {
    // kubectl's JSONPath printer: strings verbatim, scalars as Go prints them, composites as JSON.
    if (v.IsString()) return textCell(kube::view(v), a);
    if (v.IsNumber()) return textCell(formatGoNumber(v), a);
    if (v.IsBool()) return textCell(v.GetBool() ? "true" : "false", a);
    return textCell(kube::toJson(v), a);
  }
  return JsonValue();
}

}  // namespace apiserver
