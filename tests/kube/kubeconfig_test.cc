#include "kube/kubeconfig.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <vector>

namespace kube {
namespace {

namespace fs = std::filesystem;

// A temporary directory removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "kubeconfig-test-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& rel, const std::string& content) const {
    fs::path p = path / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
    return p.string();
  }
};

const char* kCa = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";
const char* kCert = "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n";
const char* kKey = "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n";

TEST_CASE("kubeconfig: base64 round trip") {
  for (std::string s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", "hello world\n", std::string("\0\xff\x10", 3)}) {
    auto d = base64Decode(base64Encode(s));
    REQUIRE(d.isOk());
    CHECK(*d == s);
  }
  CHECK(base64Encode("foobar") == "Zm9vYmFy");
  CHECK(*base64Decode("Zm9v\nYmE=") == "fooba");
  CHECK_FALSE(base64Decode("Zm9v!").isOk());
}

TEST_CASE("kubeconfig: current context with inline data") {
  TempDir dir;
  std::string yaml = std::string(R"(apiVersion: v1
kind: Config
current-context: admin@foxden
clusters:
- name: other
  cluster:
    server: https://other:6443
- name: foxden
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: )") + base64Encode(kCa) + R"(
users:
- name: admin
  user:
    client-certificate-data: )" + base64Encode(kCert) + R"(
    client-key-data: )" + base64Encode(kKey) + R"(
- name: bob
  user:
    token: s3cr3t
contexts:
- name: admin@foxden
  context:
    cluster: foxden
    user: admin
    namespace: prod
- name: bob@other
  context:
    cluster: other
    user: bob
)";
  std::string path = dir.write("config", yaml);
  auto cfg = loadKubeconfig(path);
  REQUIRE_MESSAGE(cfg.isOk(), cfg.status().toString());
  CHECK(cfg->server == "https://127.0.0.1:6443");
  CHECK(cfg->caPem == kCa);
  CHECK(cfg->clientCertPem == kCert);
  CHECK(cfg->clientKeyPem == kKey);
  CHECK(cfg->bearerToken.empty());
  CHECK(cfg->ns == "prod");
  CHECK_FALSE(cfg->insecureSkipTlsVerify);

  auto bob = loadKubeconfig(path, "bob@other");
  REQUIRE(bob.isOk());
  CHECK(bob->server == "https://other:6443");
  CHECK(bob->bearerToken == "s3cr3t");
  CHECK(bob->ns == "default");
  CHECK(bob->caPem.empty());

  auto missing = loadKubeconfig(path, "nope");
  CHECK_FALSE(missing.isOk());
  CHECK(missing.status().message().find("context \"nope\" not found") != std::string::npos);
}

TEST_CASE("kubeconfig: file references resolve against the kubeconfig's directory") {
  TempDir dir;
  dir.write("pki/ca.crt", kCa);
  dir.write("pki/admin.crt", kCert);
  dir.write("pki/admin.key", kKey);
  dir.write("token", "tok-from-file\n");
  std::string abs = dir.write("abs-ca.crt", kCa);
  std::string path = dir.write("sub/../config", R"(
current-context: c
clusters:
- name: k
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: pki/ca.crt
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    client-certificate: pki/admin.crt
    client-key: pki/admin.key
    tokenFile: token
contexts:
- name: c
  context: {cluster: k, user: u}
)");
  auto cfg = loadKubeconfig(path);
  REQUIRE_MESSAGE(cfg.isOk(), cfg.status().toString());
  CHECK(cfg->caPem == kCa);
  CHECK(cfg->clientCertPem == kCert);
  CHECK(cfg->clientKeyPem == kKey);
  CHECK(cfg->bearerToken == "tok-from-file");
  CHECK(cfg->insecureSkipTlsVerify);

  // An absolute path and a missing file.
  auto absCfg = parseKubeconfig("current-context: c\nclusters: [{name: k, cluster: {server: 'https://x', "
                                "certificate-authority: '" + abs + "'}}]\ncontexts: [{name: c, context: {cluster: k}}]\n",
                                "/nonexistent");
  REQUIRE(absCfg.isOk());
  CHECK(absCfg->caPem == kCa);
  auto bad = parseKubeconfig("current-context: c\nclusters: [{name: k, cluster: {server: 'https://x', "
                             "certificate-authority: missing.crt}}]\ncontexts: [{name: c, context: {cluster: k}}]\n",
                             dir.path.string());
  CHECK_FALSE(bad.isOk());
  CHECK(bad.status().message().find("certificate-authority") != std::string::npos);
}

TEST_CASE("kubeconfig: errors name what is missing") {
  CHECK_FALSE(loadKubeconfig("/nonexistent/kubeconfig").isOk());
  CHECK_FALSE(parseKubeconfig("kind: Config\n", "").isOk());  // no current-context
  auto noCluster = parseKubeconfig("current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n", "");
  CHECK_FALSE(noCluster.isOk());
  CHECK(noCluster.status().message().find("cluster \"k\"") != std::string::npos);
  auto badB64 = parseKubeconfig("current-context: c\nclusters: [{name: k, cluster: {server: 'https://x', "
                                "certificate-authority-data: '!!!'}}]\ncontexts: [{name: c, context: {cluster: k}}]\n",
                                "");
  CHECK_FALSE(badB64.isOk());
  CHECK_FALSE(parseKubeconfig("[1, 2", "").isOk());
}

TEST_CASE("kubeconfig: renderKubeconfig round-trips through loadKubeconfig") {
  RestConfig c;
  c.server = "https://192.168.1.10:6443";
  c.caPem = kCa;
  c.clientCertPem = kCert;
  c.clientKeyPem = kKey;
  c.bearerToken = "abc:def\"quoted\"";
  c.ns = "kube-system";
  std::string yaml = renderKubeconfig(c, "admin", "foxden");
  CHECK(yaml.find("current-context: \"admin@foxden\"") != std::string::npos);
  auto back = parseKubeconfig(yaml, "");
  REQUIRE_MESSAGE(back.isOk(), back.status().toString(), "\n", yaml);
  CHECK(back->server == c.server);
  CHECK(back->caPem == c.caPem);
  CHECK(back->clientCertPem == c.clientCertPem);
  CHECK(back->clientKeyPem == c.clientKeyPem);
  CHECK(back->bearerToken == c.bearerToken);
  CHECK(back->ns == "kube-system");
  CHECK_FALSE(back->insecureSkipTlsVerify);

  RestConfig bare;
  bare.server = "http://127.0.0.1:8080";
  bare.insecureSkipTlsVerify = true;
  auto back2 = parseKubeconfig(renderKubeconfig(bare, "worker", "c"), "");
  REQUIRE(back2.isOk());
  CHECK(back2->insecureSkipTlsVerify);
  CHECK(back2->bearerToken.empty());
}

TEST_CASE("kubeconfig: in-cluster config from the service account tree") {
  TempDir dir;
  dir.write("var/run/secrets/kubernetes.io/serviceaccount/token", "sa-token\n");
  dir.write("var/run/secrets/kubernetes.io/serviceaccount/ca.crt", kCa);
  dir.write("var/run/secrets/kubernetes.io/serviceaccount/namespace", "team-a");
  unsetenv("KUBERNETES_SERVICE_HOST");
  CHECK(loadInClusterConfig(dir.path.string()).status().code() == 404);
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  auto cfg = loadInClusterConfig(dir.path.string());
  REQUIRE_MESSAGE(cfg.isOk(), cfg.status().toString());
  CHECK(cfg->server == "https://10.96.0.1:443");
  CHECK(cfg->bearerToken == "sa-token");
  CHECK(cfg->caPem == kCa);
  CHECK(cfg->ns == "team-a");
  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  auto v6 = loadInClusterConfig(dir.path.string());
  REQUIRE(v6.isOk());
  CHECK(v6->server == "https://[fd00::1]:443");
  CHECK_FALSE(loadInClusterConfig((dir.path / "missing").string()).isOk());
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

}  // namespace
}  // namespace kube
