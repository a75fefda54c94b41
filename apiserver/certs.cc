#include "apiserver/certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "kube/certs.h"

namespace apiserver {

namespace {

using kube::pki::addExt;
using kube::pki::CertPtr;
using kube::pki::KeyPtr;
using kube::pki::makeCert;
using kube::pki::sanList;

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
  return kube::pki::writePem(path, isKey ? key : nullptr, isKey ? nullptr : cert);
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
    caCert = makeCert(caKey.get(), "foxden-ca", nullptr, 3650);
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
    CertPtr cert = makeCert(key.get(), "foxden-server", caCert.get(), 825);
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
