#include "kube/certs.h"

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

namespace kube::pki {

CertPtr makeCert(EVP_PKEY* subjectKey, const std::string& cn, X509* issuer, long days) {
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
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  return cert;
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

Status writePem(const std::string& path, EVP_PKEY* key, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return Status::internal("cannot write " + path);
  if (key != nullptr) ::fchmod(fileno(f), 0600);
  int ok = key != nullptr ? PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) : PEM_write_X509(f, cert);
  std::fclose(f);
  return ok == 1 ? Status::ok() : Status::internal("cannot write PEM to " + path);
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

std::string sha256Hex(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

StatusOr<ServingCert> ensureSelfSignedCert(const std::string& dir, const std::string& cn,
                                           const std::vector<std::string>& hosts) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  ServingCert out{dir + "/cert.pem", dir + "/key.pem", ""};
  if (FILE* f = std::fopen(out.certFile.c_str(), "r")) {
    CertPtr cert(PEM_read_X509(f, nullptr, nullptr, nullptr), X509_free);
    std::fclose(f);
    struct stat st {};
    if (cert && ::stat(out.keyFile.c_str(), &st) == 0) {
      out.sha256 = sha256Hex(cert.get());
      return out;
    }
  }
  KeyPtr key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  if (!key) return Status::internal("cannot generate an EC P-256 key");
  CertPtr cert = makeCert(key.get(), cn, nullptr, 3650);
  if (!addExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:FALSE") ||
      !addExt(cert.get(), cert.get(), NID_key_usage, "critical,digitalSignature") ||
      !addExt(cert.get(), cert.get(), NID_ext_key_usage, "serverAuth") ||
      !addExt(cert.get(), cert.get(), NID_subject_alt_name, sanList(hosts)) ||
      X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    return Status::internal("cannot sign the serving certificate");
  }
  // Key first: a certificate on disk always has its key.
  if (Status st = writePem(out.keyFile + ".tmp", key.get(), nullptr); !st) return st;
  if (Status st = writePem(out.certFile + ".tmp", nullptr, cert.get()); !st) return st;
  if (::rename((out.keyFile + ".tmp").c_str(), out.keyFile.c_str()) != 0 ||
      ::rename((out.certFile + ".tmp").c_str(), out.certFile.c_str()) != 0) {
    return Status::internal("cannot store the serving certificate in " + dir);
  }
  out.sha256 = sha256Hex(cert.get());
  return out;
}

}  // namespace kube::pki
