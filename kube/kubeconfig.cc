#include "kube/kubeconfig.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "kube/json.h"
#include "kube/yaml.h"

namespace kube {

namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

StatusOr<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::notFound("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::internal("error reading " + path);
  return ss.str();
}

std::string resolve(const std::string& baseDir, const std::string& p) {
  if (p.empty() || p[0] == '/' || baseDir.empty()) return p;
  return baseDir + "/" + p;
}

std::string dirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Finds the entry named `name` in a kubeconfig list (clusters, users, contexts) and returns its
// inner object (e.g. the "cluster" member).
const JsonValue* findNamed(const JsonValue& root, const char* list, const char* inner,
                           const std::string& name) {
  const JsonValue* arr = find(root, {list});
  if (arr == nullptr || !arr->IsArray()) return nullptr;
  for (const auto& e : arr->GetArray()) {
    if (getString(e, {"name"}) == name) {
      const JsonValue* v = find(e, {inner});
      static const JsonValue kEmptyObject(rapidjson::kObjectType);
      return v != nullptr ? v : &kEmptyObject;
    }
  }
  return nullptr;
}

// Reads a credential given inline as base64 (`dataKey`) or as a file path (`fileKey`).
Status readCredential(const JsonValue& obj, const char* dataKey, const char* fileKey,
                      const std::string& baseDir, std::string& out) {
  std::string data = getString(obj, {dataKey});
  if (!data.empty()) {
    auto decoded = base64Decode(data);
    if (!decoded) return Status::invalid(std::string(dataKey) + ": " + decoded.status().message());
    out = std::move(*decoded);
    return Status::ok();
  }
  std::string file = getString(obj, {fileKey});
  if (!file.empty()) {
    auto content = readFile(resolve(baseDir, file));
    if (!content) return Status::invalid(std::string(fileKey) + ": " + content.status().message());
    out = std::move(*content);
  }
  return Status::ok();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\n')) ++i;
  return s.substr(i);
}

// A YAML double-quoted scalar; JSON string escaping is valid YAML.
std::string yamlQuote(std::string_view s) {
  JsonValue v(rapidjson::StringRef(s.data(), static_cast<rapidjson::SizeType>(s.size())));
  return toJson(v);
}

}  // namespace

std::string base64Encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    uint32_t n = (uint32_t(uint8_t(data[i])) << 16) | (uint32_t(uint8_t(data[i + 1])) << 8) |
                 uint8_t(data[i + 2]);
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += kB64[n & 63];
  }
  if (i < data.size()) {
    uint32_t n = uint32_t(uint8_t(data[i])) << 16;
    if (i + 1 < data.size()) n |= uint32_t(uint8_t(data[i + 1])) << 8;
    out += kB64[(n >> 18) & 63];
    out += kB64[(n >> 12) & 63];
    out += i + 1 < data.size() ? kB64[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

StatusOr<std::string> base64Decode(std::string_view text) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  int pad = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad > 0) return Status::invalid("invalid base64: data after padding");
    const char* p = std::char_traits<char>::find(kB64, 64, c);
    if (p == nullptr) return Status::invalid(std::string("invalid base64 character '") + c + "'");
    acc = (acc << 6) | static_cast<uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (pad > 2 || bits >= 6) return Status::invalid("invalid base64: truncated data");
  return out;
}

StatusOr<RestConfig> parseKubeconfig(std::string_view yaml, const std::string& baseDir,
                                     std::string_view contextName) {
  auto doc = yamlToJson(yaml);
  if (!doc) return Status::invalid("kubeconfig: " + doc.status().message());
  const Json& root = *doc;
  if (!root.IsObject()) return Status::invalid("kubeconfig: not a YAML mapping");
  std::string ctxName(contextName);
  if (ctxName.empty()) ctxName = getString(root, {"current-context"});
  if (ctxName.empty()) return Status::invalid("kubeconfig: no current-context set and no context given");
  const JsonValue* ctx = findNamed(root, "contexts", "context", ctxName);
  if (ctx == nullptr) return Status::invalid("kubeconfig: context \"" + ctxName + "\" not found");
  std::string clusterName = getString(*ctx, {"cluster"});
  std::string userName = getString(*ctx, {"user"});
  const JsonValue* cluster = findNamed(root, "clusters", "cluster", clusterName);
  if (cluster == nullptr) {
    return Status::invalid("kubeconfig: cluster \"" + clusterName + "\" of context \"" + ctxName + "\" not found");
  }
  RestConfig cfg;
  cfg.server = getString(*cluster, {"server"});
  if (cfg.server.empty()) return Status::invalid("kubeconfig: cluster \"" + clusterName + "\" has no server");
  while (!cfg.server.empty() && cfg.server.back() == '/') cfg.server.pop_back();
  cfg.insecureSkipTlsVerify = getBool(*cluster, {"insecure-skip-tls-verify"});
  if (Status st = readCredential(*cluster, "certificate-authority-data", "certificate-authority", baseDir, cfg.caPem);
      !st) {
    return Status::invalid("kubeconfig: cluster \"" + clusterName + "\": " + st.message());
  }
  if (!userName.empty()) {
    const JsonValue* user = findNamed(root, "users", "user", userName);
    if (user == nullptr) {
      return Status::invalid("kubeconfig: user \"" + userName + "\" of context \"" + ctxName + "\" not found");
    }
    std::string where = "kubeconfig: user \"" + userName + "\": ";
    if (Status st = readCredential(*user, "client-certificate-data", "client-certificate", baseDir, cfg.clientCertPem);
        !st) {
      return Status::invalid(where + st.message());
    }
    if (Status st = readCredential(*user, "client-key-data", "client-key", baseDir, cfg.clientKeyPem); !st) {
      return Status::invalid(where + st.message());
    }
    if (cfg.clientCertPem.empty() != cfg.clientKeyPem.empty()) {
      return Status::invalid(where + "client certificate and client key must be given together");
    }
    cfg.bearerToken = getString(*user, {"token"});
    std::string tokenFile = getString(*user, {"tokenFile"});
    if (cfg.bearerToken.empty() && !tokenFile.empty()) {
      auto t = readFile(resolve(baseDir, tokenFile));
      if (!t) return Status::invalid(where + "tokenFile: " + t.status().message());
      cfg.bearerToken = trim(std::move(*t));
    }
  }
  std::string ns = getString(*ctx, {"namespace"});
  if (!ns.empty()) cfg.ns = ns;
  return cfg;
}

StatusOr<RestConfig> loadKubeconfig(const std::string& path, std::string_view context) {
  auto text = readFile(path);
  if (!text) return Status::notFound("kubeconfig: " + text.status().message());
  auto cfg = parseKubeconfig(*text, dirOf(path), context);
  if (!cfg) return Status(cfg.status().code(), cfg.status().reason(), path + ": " + cfg.status().message());
  return cfg;
}

StatusOr<RestConfig> loadInClusterConfig(const std::string& rootDir) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || port == nullptr || *host == '\0' || *port == '\0') {
    return Status::notFound(
        "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set");
  }
  const std::string dir = rootDir + "/var/run/secrets/kubernetes.io/serviceaccount/";
  RestConfig cfg;
  std::string h = host;
  if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6 literal
  cfg.server = "https://" + h + ":" + port;
  auto token = readFile(dir + "token");
  if (!token) return Status::notFound("in-cluster config: " + token.status().message());
  cfg.bearerToken = trim(std::move(*token));
  auto ca = readFile(dir + "ca.crt");
  if (!ca) return Status::notFound("in-cluster config: " + ca.status().message());
  cfg.caPem = std::move(*ca);
  if (auto ns = readFile(dir + "namespace"); ns && !trim(*ns).empty()) cfg.ns = trim(*ns);
  return cfg;
}

std::string renderKubeconfig(const RestConfig& c, std::string_view userName, std::string_view clusterName) {
  std::string contextName = std::string(userName) + "@" + std::string(clusterName);
  std::string y;
  y += "apiVersion: v1\nkind: Config\n";
  y += "clusters:\n- name: " + yamlQuote(clusterName) + "\n  cluster:\n";
  y += "    server: " + yamlQuote(c.server) + "\n";
  if (!c.caPem.empty()) y += "    certificate-authority-data: " + base64Encode(c.caPem) + "\n";
  if (c.insecureSkipTlsVerify) y += "    insecure-skip-tls-verify: true\n";
  y += "users:\n- name: " + yamlQuote(userName) + "\n  user:";
  std::string user;
  if (!c.clientCertPem.empty()) user += "    client-certificate-data: " + base64Encode(c.clientCertPem) + "\n";
  if (!c.clientKeyPem.empty()) user += "    client-key-data: " + base64Encode(c.clientKeyPem) + "\n";
  if (!c.bearerToken.empty()) user += "    token: " + yamlQuote(c.bearerToken) + "\n";
  y += user.empty() ? " {}\n" : "\n" + user;
  y += "contexts:\n- name: " + yamlQuote(contextName) + "\n  context:\n";
  y += "    cluster: " + yamlQuote(clusterName) + "\n";
  y += "    user: " + yamlQuote(userName) + "\n";
  if (!c.ns.empty()) y += "    namespace: " + yamlQuote(c.ns) + "\n";
  y += "current-context: " + yamlQuote(contextName) + "\n";
  y += "preferences: {}\n";
  return y;
}

}  // namespace kube
