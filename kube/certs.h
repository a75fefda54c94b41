#pragma once
// X.509 building blocks shared by the control plane's PKI (apiserver/certs.h) and the agent's
// self-signed serving certificate: EC P-256 keys, certificates, PEM files, SHA-256 fingerprints.
//
// Thread safety: plain functions over OpenSSL objects the caller owns.

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "kube/status.h"

namespace kube::pki {

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

// A certificate for `subjectKey` named CN=`cn`, valid from an hour ago for `days`; issued by
// `issuer` (nullptr: self-issued). Extensions are added by the caller, then it is signed.
CertPtr makeCert(EVP_PKEY* subjectKey, const std::string& cn, X509* issuer, long days);
// Adds one v3 extension in openssl.cnf syntax ("critical,CA:TRUE", "DNS:x,IP:1.2.3.4", ...).
bool addExt(X509* cert, X509* issuer, int nid, const std::string& value);
// Writes a private key (mode 0600) or a certificate as PEM.
[[nodiscard]] Status writePem(const std::string& path, EVP_PKEY* key, X509* cert);
// "DNS:localhost,IP:127.0.0.1,..." for the hosts (IPs and names; wildcard addresses skipped),
// always with 127.0.0.1 and localhost.
std::string sanList(const std::vector<std::string>& hosts);
// SHA-256 of the certificate's DER encoding, lower-case hex (what a client pins).
std::string sha256Hex(X509* cert);

struct ServingCert {
  std::string certFile, keyFile;
  std::string sha256;  // of certFile's certificate
};

// A self-signed EC P-256 serving certificate in `dir` (cert.pem / key.pem), generated on first
// use and reused afterwards so that its fingerprint stays stable across restarts.
[[nodiscard]] StatusOr<ServingCert> ensureSelfSignedCert(const std::string& dir, const std::string& cn,
                                                         const std::vector<std::string>& hosts);

}  // namespace kube::pki
