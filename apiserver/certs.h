#pragma once
// The control plane's PKI: a CA and a serving certificate (EC P-256), generated with OpenSSL on
// first start under DIR/pki and reused afterwards.

#include <string>
#include <vector>

#include "kube/status.h"

namespace apiserver {

struct Pki {
  std::string caCertFile, caKeyFile, serverCertFile, serverKeyFile;
  std::string caPem;  // for kubeconfigs
};

// `hosts`: IP addresses and DNS names for the serving certificate's SANs (127.0.0.1 and localhost
// are always included). A serving certificate lacking one of them is re-issued from the same CA.
kube::StatusOr<Pki> ensurePki(const std::string& dir, const std::vector<std::string>& hosts);

}  // namespace apiserver
