#include "apiserver/request.h"

#include <openssl/rand.h>

#include <cctype>
#include <regex>

namespace apiserver {

std::string urlDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string urlEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::map<std::string, std::string> parseQuery(std::string_view query) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view kv = query.substr(pos, amp - pos);
    if (!kv.empty()) {
      size_t eq = kv.find('=');
      std::string k = urlDecode(kv.substr(0, eq));
      std::string v = eq == std::string_view::npos ? "" : urlDecode(kv.substr(eq + 1));
      out.emplace(std::move(k), std::move(v));  // first occurrence wins
    }
    pos = amp + 1;
  }
  return out;
}

RequestInfo parseRequestInfo(const std::string& method, const std::string& path,
                             const std::map<std::string, std::string>& query) {
  RequestInfo ri;
  std::vector<std::string> segs;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    if (slash > pos) segs.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  if (segs.empty() || (segs[0] != "api" && segs[0] != "apis")) return ri;
  size_t i = 1;
  if (segs[0] == "api") {
    if (segs.size() < 3) return ri;  // /api, /api/v1 are discovery
    ri.version = segs[1];
    i = 2;
  } else {
    if (segs.size() < 4) return ri;  // /apis, /apis/g, /apis/g/v
    ri.group = segs[1];
    ri.version = segs[2];
    i = 3;
  }
  std::vector<std::string> cur(segs.begin() + static_cast<long>(i), segs.end());
  ri.parts = cur;
  if (cur[0] == "namespaces" && cur.size() > 1) {
    ri.ns = cur[1];
    if (cur.size() > 2 && cur[2] != "status" && cur[2] != "finalize") {
      cur.erase(cur.begin(), cur.begin() + 2);
    }
  }
  ri.isResource = true;
  ri.resource = cur[0];
  if (cur.size() > 1) ri.name = cur[1];
  if (cur.size() > 2) ri.subresource = cur[2];
  if (cur.size() > 3) ri.isResource = false;  // deeper paths are not served
  if (ri.resource == "namespaces") ri.ns.clear();
  if (auto ls = query.find("labelSelector"); ls != query.end()) ri.labelSelector = ls->second;
  auto w = query.find("watch");
  bool watch = w != query.end() && (w->second == "true" || w->second == "1");
  if (method == "GET" || method == "HEAD") {
    ri.verb = ri.name.empty() ? (watch ? "watch" : "list") : (watch ? "watch" : "get");
  } else if (method == "POST") {
    ri.verb = "create";
  } else if (method == "PUT") {
    ri.verb = "update";
  } else if (method == "PATCH") {
    ri.verb = "patch";
  } else if (method == "DELETE") {
    ri.verb = ri.name.empty() ? "deletecollection" : "delete";
  } else {
    ri.verb = "";
  }
  return ri;
}

std::string mediaType(std::string_view ct) {
  size_t semi = ct.find(';');
  std::string out(ct.substr(0, semi));
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
  size_t start = 0;
  while (start < out.size() && std::isspace(static_cast<unsigned char>(out[start]))) ++start;
  out = out.substr(start);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool wantsTable(std::string_view accept) {
  // Accept lists alternatives by preference; a Table alternative first means the client renders it.
  size_t comma = accept.find(',');
  std::string_view first = accept.substr(0, comma);
  return first.find("as=Table") != std::string_view::npos;
}

std::string newUid() {
  unsigned char b[16];
  RAND_bytes(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

std::string randomSuffix(size_t n) {
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string out;
  unsigned char b[64];
  RAND_bytes(b, static_cast<int>(std::min(n, sizeof b)));
  for (size_t i = 0; i < n && i < sizeof b; ++i) out.push_back(kAlphabet[b[i] % 27]);
  return out;
}

std::string validateDnsSubdomain(std::string_view s) {
  static const std::regex kRe("[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*");
  if (s.size() > 253) return "must be no more than 253 characters";
  if (!std::regex_match(s.begin(), s.end(), kRe)) {
    return "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
           "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
           "regex used for validation is "
           "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
  }
  return "";
}

std::string validateDnsLabel(std::string_view s) {
  static const std::regex kRe("[a-z0-9]([-a-z0-9]*[a-z0-9])?");
  if (s.size() > 63) return "must be no more than 63 characters";
  if (!std::regex_match(s.begin(), s.end(), kRe)) {
    return "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
           "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
           "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
  }
  return "";
}

}  // namespace apiserver
