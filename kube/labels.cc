#include "kube/labels.h"

#include <algorithm>
#include <cctype>

namespace kube {

namespace {

constexpr size_t kMaxNameLength = 63;
constexpr size_t kMaxPrefixLength = 253;

bool isAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?
bool isQualifiedNamePart(std::string_view s) {
  if (s.empty() || !isAlnum(s.front()) || !isAlnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return isAlnum(c) || c == '-' || c == '_' || c == '.'; });
}

// RFC 1123 subdomain: lower-case labels [a-z0-9]([-a-z0-9]*[a-z0-9])? joined by '.'.
bool isDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > kMaxPrefixLength) return false;
  size_t start = 0;
  while (start <= s.size()) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (label.empty() || label.size() > 63) return false;
    auto lowerAlnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!lowerAlnum(label.front()) || !lowerAlnum(label.back())) return false;
    for (char c : label) {
      if (!lowerAlnum(c) && c != '-') return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// ---- label selector lexer ----

enum class Tok { kIdent, kOpenParen, kCloseParen, kComma, kNot, kEquals, kDoubleEquals, kNotEquals,
                 kGreater, kLess, kEnd };

struct Token {
  Tok kind;
  std::string text;
};

bool isSpecial(char c) {
  return c == '!' || c == '=' || c == ',' || c == '(' || c == ')' || c == '<' || c == '>';
}

std::vector<Token> lex(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (c == '!' && i + 1 < s.size() && s[i + 1] == '=') {
      out.push_back({Tok::kNotEquals, "!="});
      i += 2;
    } else if (c == '=' && i + 1 < s.size() && s[i + 1] == '=') {
      out.push_back({Tok::kDoubleEquals, "=="});
      i += 2;
    } else if (isSpecial(c)) {
      static constexpr std::string_view kChars = "!=,()<>";
      static constexpr Tok kKinds[] = {Tok::kNot, Tok::kEquals, Tok::kComma, Tok::kOpenParen,
                                       Tok::kCloseParen, Tok::kLess, Tok::kGreater};
      out.push_back({kKinds[kChars.find(c)], std::string(1, c)});
      ++i;
    } else {
      size_t j = i;
      while (j < s.size() && !isSpecial(s[j]) && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back({Tok::kIdent, std::string(s.substr(i, j - i))});
      i = j;
    }
  }
  out.push_back({Tok::kEnd, ""});
  return out;
}

class SelectorParser {
 public:
  explicit SelectorParser(std::string_view text) : text_(text), toks_(lex(text)) {}

  Status parse(std::vector<LabelRequirement>& out) {
    if (peek().kind == Tok::kEnd) return Status::ok();
    for (;;) {
      LabelRequirement r;
      Status st = parseRequirement(r);
      if (!st) return st;
      out.push_back(std::move(r));
      Token t = next();
      if (t.kind == Tok::kEnd) return Status::ok();
      if (t.kind != Tok::kComma) return err("expected ',' or end of selector, found " + describe(t));
    }
  }

 private:
  const Token& peek() const { return toks_[pos_]; }
  Token next() { return toks_[pos_ < toks_.size() - 1 ? pos_++ : pos_]; }
  static std::string describe(const Token& t) {
    return t.kind == Tok::kEnd ? "end of selector" : quote(t.text);
  }
  Status err(const std::string& m) const {
    return Status::badRequest("invalid label selector " + quote(text_) + ": " + m);
  }

  Status parseRequirement(LabelRequirement& r) {
    bool negated = false;
    if (peek().kind == Tok::kNot) {
      negated = true;
      next();
    }
    Token key = next();
    if (key.kind != Tok::kIdent) return err("expected a label key, found " + describe(key));
    if (Status st = validateLabelKey(key.text); !st) return err(st.message());
    r.key = key.text;
    Tok la = peek().kind;
    if (negated || la == Tok::kComma || la == Tok::kEnd) {
      if (negated && la != Tok::kComma && la != Tok::kEnd) {
        return err("'!" + key.text + "' cannot be followed by an operator");
      }
      r.op = negated ? SelectorOp::kDoesNotExist : SelectorOp::kExists;
      return Status::ok();
    }
    Token op = next();
    if (op.kind == Tok::kIdent && (op.text == "in" || op.text == "notin")) {
      r.op = op.text == "in" ? SelectorOp::kIn : SelectorOp::kNotIn;
      if (next().kind != Tok::kOpenParen) return err("expected '(' after " + quote(op.text));
      for (;;) {
        Token v = next();
        if (v.kind == Tok::kCloseParen && r.values.empty()) break;
        if (v.kind != Tok::kIdent) return err("expected a value in the set, found " + describe(v));
        r.values.push_back(v.text);
        Token sep = next();
        if (sep.kind == Tok::kCloseParen) break;
        if (sep.kind != Tok::kComma) return err("expected ',' or ')' in the set, found " + describe(sep));
      }
      if (r.values.empty()) return err("values set of '" + op.text + "' can't be empty");
    } else if (op.kind == Tok::kEquals || op.kind == Tok::kDoubleEquals ||
               op.kind == Tok::kNotEquals) {
      r.op = op.kind == Tok::kEquals         ? SelectorOp::kEquals
             : op.kind == Tok::kDoubleEquals ? SelectorOp::kDoubleEquals
                                             : SelectorOp::kNotEquals;
      // "a=" selects the empty value.
      if (peek().kind == Tok::kIdent) {
        r.values.push_back(next().text);
      } else if (peek().kind == Tok::kComma || peek().kind == Tok::kEnd) {
        r.values.emplace_back();
      } else {
        return err("expected a value after " + quote(op.text) + ", found " + describe(peek()));
      }
    } else if (op.kind == Tok::kGreater || op.kind == Tok::kLess) {
      return err("operators '>' and '<' are not supported");
    } else {
      return err("expected an operator (=, ==, !=, in, notin) after " + quote(key.text) +
                 ", found " + describe(op));
    }
    for (const auto& v : r.values) {
      if (Status st = validateLabelValue(v); !st) return err(st.message());
    }
    std::sort(r.values.begin(), r.values.end());
    r.values.erase(std::unique(r.values.begin(), r.values.end()), r.values.end());
    return Status::ok();
  }

  std::string_view text_;
  std::vector<Token> toks_;
  size_t pos_ = 0;
};

const char* opString(SelectorOp op) {
  switch (op) {
    case SelectorOp::kEquals: return "=";
    case SelectorOp::kDoubleEquals: return "==";
    case SelectorOp::kNotEquals: return "!=";
    case SelectorOp::kIn: return " in ";
    case SelectorOp::kNotIn: return " notin ";
    default: return "";
  }
}

std::string scalarText(const JsonValue& v) {
  if (v.IsString()) return std::string(view(v));
  if (v.IsBool()) return v.GetBool() ? "true" : "false";
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsUint64()) return std::to_string(v.GetUint64());
  if (v.IsNumber()) return toJson(v);
  return "";
}

}  // namespace

Status validateLabelKey(std::string_view key) {
  std::string_view name = key;
  size_t slash = key.find('/');
  if (slash != std::string_view::npos) {
    std::string_view prefix = key.substr(0, slash);
    name = key.substr(slash + 1);
    if (prefix.empty()) return Status::invalid("label key " + quote(key) + ": prefix part must be non-empty");
    if (prefix.size() > kMaxPrefixLength) {
      return Status::invalid("label key " + quote(key) + ": prefix part must be no more than 253 characters");
    }
    if (!isDnsSubdomain(prefix)) {
      return Status::invalid("label key " + quote(key) +
                             ": prefix part must be a lowercase RFC 1123 subdomain (e.g. 'example.com')");
    }
  }
  if (name.empty()) return Status::invalid("label key " + quote(key) + ": name part must be non-empty");
  if (name.size() > kMaxNameLength) {
    return Status::invalid("label key " + quote(key) + ": name part must be no more than 63 characters");
  }
  if (!isQualifiedNamePart(name)) {
    return Status::invalid("label key " + quote(key) +
                           ": name part must consist of alphanumeric characters, '-', '_' or '.', and "
                           "must start and end with an alphanumeric character");
  }
  return Status::ok();
}

Status validateLabelValue(std::string_view value) {
  if (value.empty()) return Status::ok();
  if (value.size() > kMaxNameLength) {
    return Status::invalid("label value " + quote(value) + ": must be no more than 63 characters");
  }
  if (!isQualifiedNamePart(value)) {
    return Status::invalid("label value " + quote(value) +
                           ": must consist of alphanumeric characters, '-', '_' or '.', and must "
                           "start and end with an alphanumeric character");
  }
  return Status::ok();
}

Status validateLabels(const JsonValue& labels) {
  if (labels.IsNull()) return Status::ok();
  if (!labels.IsObject()) return Status::invalid("labels must be an object of strings");
  for (const auto& m : labels.GetObject()) {
    if (Status st = validateLabelKey(view(m.name)); !st) return st;
    if (!m.value.IsString()) return Status::invalid("label " + quote(view(m.name)) + ": value must be a string");
    if (Status st = validateLabelValue(view(m.value)); !st) return st;
  }
  return Status::ok();
}

bool LabelRequirement::matches(const JsonValue& labels) const {
  const JsonValue* v = nullptr;
  if (labels.IsObject()) {
    auto it = labels.FindMember(rapidjson::StringRef(key.data(), static_cast<rapidjson::SizeType>(key.size())));
    if (it != labels.MemberEnd() && it->value.IsString()) v = &it->value;
  }
  auto inSet = [&] { return std::binary_search(values.begin(), values.end(), std::string(view(*v))); };
  switch (op) {
    case SelectorOp::kEquals:
    case SelectorOp::kDoubleEquals:
    case SelectorOp::kIn:
      return v != nullptr && inSet();
    case SelectorOp::kNotEquals:
    case SelectorOp::kNotIn:
      return v == nullptr || !inSet();
    case SelectorOp::kExists:
      return v != nullptr;
    case SelectorOp::kDoesNotExist:
      return v == nullptr;
  }
  return false;
}

std::string LabelRequirement::toString() const {
  switch (op) {
    case SelectorOp::kExists: return key;
    case SelectorOp::kDoesNotExist: return "!" + key;
    case SelectorOp::kIn:
    case SelectorOp::kNotIn: {
      std::string s = key + opString(op) + "(";
      for (size_t i = 0; i < values.size(); ++i) {
        if (i) s += ',';
        s += values[i];
      }
      return s + ")";
    }
    default:
      return key + opString(op) + (values.empty() ? "" : values[0]);
  }
}

StatusOr<Selector> Selector::parse(std::string_view text) {
  Selector s;
  SelectorParser p(text);
  if (Status st = p.parse(s.requirements_); !st) return st;
  std::stable_sort(s.requirements_.begin(), s.requirements_.end(),
                   [](const auto& a, const auto& b) { return a.key < b.key; });
  return s;
}

StatusOr<Selector> Selector::fromLabelSelector(const JsonValue* ls) {
  if (ls == nullptr || ls->IsNull()) return nothing();
  if (!ls->IsObject()) return Status::invalid("labelSelector must be an object");
  Selector s;
  if (const JsonValue* ml = find(*ls, {"matchLabels"}); ml != nullptr && !ml->IsNull()) {
    if (Status st = validateLabels(*ml); !st) return Status::invalid("matchLabels: " + st.message());
    for (const auto& m : ml->GetObject()) {
      s.requirements_.push_back({std::string(view(m.name)), SelectorOp::kEquals, {std::string(view(m.value))}});
    }
  }
  auto it = ls->FindMember("matchExpressions");
  if (it != ls->MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsArray()) return Status::invalid("matchExpressions must be an array");
    for (const auto& e : it->value.GetArray()) {
      LabelRequirement r;
      r.key = getString(e, {"key"});
      if (Status st = validateLabelKey(r.key); !st) return Status::invalid("matchExpressions: " + st.message());
      std::string op = getString(e, {"operator"});
      if (op == "In") r.op = SelectorOp::kIn;
      else if (op == "NotIn") r.op = SelectorOp::kNotIn;
      else if (op == "Exists") r.op = SelectorOp::kExists;
      else if (op == "DoesNotExist") r.op = SelectorOp::kDoesNotExist;
      else return Status::invalid("matchExpressions: " + quote(op) + " is not a valid label selector operator");
      if (const JsonValue* vals = find(e, {"values"}); vals != nullptr && vals->IsArray()) {
        for (const auto& v : vals->GetArray()) {
          if (!v.IsString()) return Status::invalid("matchExpressions: values must be strings");
          if (Status st = validateLabelValue(view(v)); !st) return Status::invalid("matchExpressions: " + st.message());
          r.values.emplace_back(view(v));
        }
      }
      bool setOp = r.op == SelectorOp::kIn || r.op == SelectorOp::kNotIn;
      if (setOp && r.values.empty()) {
        return Status::invalid("matchExpressions: values set must be non-empty for operator " + op);
      }
      if (!setOp && !r.values.empty()) {
        return Status::invalid("matchExpressions: values set must be empty for operator " + op);
      }
      std::sort(r.values.begin(), r.values.end());
      r.values.erase(std::unique(r.values.begin(), r.values.end()), r.values.end());
      s.requirements_.push_back(std::move(r));
    }
  }
  std::stable_sort(s.requirements_.begin(), s.requirements_.end(),
                   [](const auto& a, const auto& b) { return a.key < b.key; });
  return s;
}

bool Selector::matches(const JsonValue& labels) const {
  if (nothing_) return false;
  return std::all_of(requirements_.begin(), requirements_.end(),
                     [&](const LabelRequirement& r) { return r.matches(labels); });
}

bool Selector::matchesObject(const JsonValue& object) const {
  static const JsonValue kNull;
  const JsonValue* labels = find(object, {"metadata", "labels"});
  return matches(labels != nullptr ? *labels : kNull);
}

std::string Selector::toString() const {
  std::string s;
  // (Appending piecewise: `(i ? "," : "") + str` trips GCC 12's false -Wrestrict at -O3.)
  for (size_t i = 0; i < requirements_.size(); ++i) {
    if (i) s += ',';
    s += requirements_[i].toString();
  }
  return s;
}

StatusOr<FieldSelector> FieldSelector::parse(std::string_view text) {
  FieldSelector fs;
  auto bad = [&](const std::string& m) {
    return Status::badRequest("invalid field selector " + quote(text) + ": " + m);
  };
  // Split on unescaped commas, then each term on its first unescaped operator.
  std::vector<std::string> terms;
  std::string cur;
  bool any = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    any = true;
    if (c == '\\' && i + 1 < text.size()) {
      cur += c;
      cur += text[++i];
    } else if (c == ',') {
      terms.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (any) terms.push_back(std::move(cur));
  for (const std::string& t : terms) {
    if (t.empty()) return bad("empty requirement");
    FieldRequirement r;
    size_t opPos = std::string::npos;
    size_t opLen = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i] == '\\') {
        ++i;
        continue;
      }
      if (t.compare(i, 2, "!=") == 0) {
        r.op = FieldOp::kNotEquals;
        opLen = 2;
      } else if (t.compare(i, 2, "==") == 0) {
        opLen = 2;
      } else if (t[i] == '=') {
        opLen = 1;
      } else {
        continue;
      }
      opPos = i;
      break;
    }
    if (opPos == std::string::npos) return bad(quote(t) + " has no operator (=, ==, !=)");
    r.field = t.substr(0, opPos);
    // Trim surrounding spaces of the field name.
    while (!r.field.empty() && r.field.back() == ' ') r.field.pop_back();
    while (!r.field.empty() && r.field.front() == ' ') r.field.erase(0, 1);
    if (r.field.empty()) return bad(quote(t) + " has no field name");
    std::string raw = t.substr(opPos + opLen);
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\') {
        if (i + 1 >= raw.size()) return bad("dangling escape in " + quote(t));
        char e = raw[++i];
        if (e != '\\' && e != ',' && e != '=') return bad("invalid escape sequence in " + quote(t));
        r.value += e;
      } else if (raw[i] == '=' ) {
        return bad("unescaped '=' in value of " + quote(t));
      } else {
        r.value += raw[i];
      }
    }
    fs.requirements_.push_back(std::move(r));
  }
  return fs;
}

bool FieldSelector::matches(const JsonValue& object) const {
  for (const auto& r : requirements_) {
    const JsonValue* v = &object;
    size_t start = 0;
    while (v != nullptr) {
      size_t dot = r.field.find('.', start);
      std::string part = r.field.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      v = find(*v, {part});
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    std::string actual = v != nullptr ? scalarText(*v) : "";
    bool eq = actual == r.value;
    if (eq != (r.op == FieldOp::kEquals)) return false;
  }
  return true;
}

std::string FieldSelector::toString() const {
  std::string s;
  for (size_t i = 0; i < requirements_.size(); ++i) {
    const auto& r = requirements_[i];
    std::string v;
    for (char c : r.value) {
      if (c == '\\' || c == ',' || c == '=') v += '\\';
      v += c;
    }
    s += (i ? "," : "") + r.field + (r.op == FieldOp::kEquals ? "=" : "!=") + v;
  }
  return s;
}

bool isDnsLabel(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(c == '-' && i > 0 && i + 1 < s.size())) return false;
  }
  return true;
}

bool isDnsSubdomain(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    if (!isDnsLabel(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start))) return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

}  // namespace kube
