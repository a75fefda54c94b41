#include "apiserver/certs.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

namespace apiserver {

namespace {

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

bool exists(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0;
}

std::string readFile(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

kube::Status writePem(const std::string& path, bool isKey, EVP_PKEY* key, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return kube::Status::internal("cannot write " + path);
  if (isKey) ::fchmod(fileno(f), 0600);
  int ok = isKey ? PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr)
                 : PEM_write_X509(f, cert);
  std::fclose(f);
  return ok == 1 ? kube::Status::ok() : kube::Status::internal("cannot write PEM to " + path);
}

bool addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return true;
}

CertPtr makeCert(EVP_PKEY* subjectKey, const std::string& cn, X509* issuer, EVP_PKEY* issuerKey,
                 long days) {
  CertPtr cert(X509_new(), X509_free);
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 24 * 3600);
  X509_set_pubkey(cert.get(), subjectKey);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  (void)issuerKey;
  return cert;
}

std::string sanList(const std::vector<std::string>& hosts) {
  std::vector<std::string> all = {"127.0.0.1", "localhost"};
  for (const auto& h : hosts) {
    if (h.empty() || h == "0.0.0.0" || h == "::") continue;
    if (std::find(all.begin(), all.end(), h) == all.end()) all.push_back(h);
  }
  std::string out;
  for (const auto& h : all) {
    unsigned char buf[16];
    bool ip = inet_pton(AF_INET, h.c_str(), buf) == 1 || inet_pton(AF_INET6, h.c_str(), buf) == 1;
    out += (out.empty() ? "" : ",") + std::string(ip ? "IP:" : "DNS:") + h;
  }
  return out;
}

}  // namespace

kube::StatusOr<Pki> ensurePki(const std::string& dir, const std::vector<std::string>& hosts) {
  ::mkdir(dir.c_str(), 0700);
  Pki p{dir + "/ca.crt", dir + "/ca.key", dir + "/server.crt", dir + "/server.key", ""};
  KeyPtr caKey(nullptr, EVP_PKEY_free);
  CertPtr caCert(nullptr, X509_free);
  if (exists(p.caCertFile) && exists(p.caKeyFile)) {
    FILE* f = std::fopen(p.caKeyFile.c_str(), "r");
    if (f != nullptr) {
      caKey.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
      std::fclose(f);
    }
    f = std::fopen(p.caCertFile.c_str(), "r");
    if (f != nullptr) {
      caCert.reset(PEM_read_X509(f, nullptr, nullptr, nullptr));
      std::fclose(f);
    }
    if (!caKey || !caCert) return kube::Status::internal("cannot read the CA in " + dir);
  } else {
    caKey.reset(EVP_EC_gen("P-256"));
    if (!caKey) return kube::Status::internal("cannot generate a CA key");
    caCert = makeCert(caKey.get(), "foxden-ca", nullptr, caKey.get(), 3650);
    if (!addExt(caCert.get(), caCert.get(), NID_basic_constraints, "critical,CA:TRUE") ||
        !addExt(caCert.get(), caCert.get(), NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") ||
        !addExt(caCert.get(), caCert.get(), NID_subject_key_identifier, "hash") ||
        X509_sign(caCert.get(), caKey.get(), EVP_sha256()) == 0) {
      return kube::Status::internal("cannot sign the CA certificate");
    }
    kube::Status st = writePem(p.caKeyFile, true, caKey.get(), nullptr);
    if (!st) return st;
    st = writePem(p.caCertFile, false, nullptr, caCert.get());
    if (!st) return st;
    ::unlink(p.serverCertFile.c_str());
  }
  std::string sans = sanList(hosts);
  std::string sansFile = dir + "/server.sans";
  if (!exists(p.serverCertFile) || !exists(p.serverKeyFile) || readFile(sansFile) != sans) {
    KeyPtr key(EVP_EC_gen("P-256"), EVP_PKEY_free);
    if (!key) return kube::Status::internal("cannot generate a serving key");
    CertPtr cert = makeCert(key.get(), "foxden-server", caCert.get(), caKey.get(), 825);
    if (!addExt(cert.get(), caCert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
        !addExt(cert.get(), caCert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
        !addExt(cert.get(), caCert.get(), NID_ext_key_usage, "serverAuth") ||
        !addExt(cert.get(), caCert.get(), NID_subject_alt_name, sans) ||
        X509_sign(cert.get(), caKey.get(), EVP_sha256()) == 0) {
      return kube::Status::internal("cannot sign the serving certificate");
    }
    kube::Status st = writePem(p.serverKeyFile, true, key.get(), nullptr);
    if (!st) return st;
    st = writePem(p.serverCertFile, false, nullptr, cert.get());
    if (!st) return st;
    std::ofstream(sansFile) << sans;
  }
  p.caPem = readFile(p.caCertFile);
  return p;
}

}  // namespace apiserver
