#pragma once
// `foxden server`: the embedded control plane for one machine. Opens the store, installs the
// built-in namespaces and Foxden's CRDs, generates the PKI and the admin kubeconfig on first start,
// and serves the Kubernetes API over HTTPS until stop().
//
// Threads: the HTTP server's (acceptor, reaper, one per connection) and the garbage collector's.

#include <memory>
#include <string>

#include "apiserver/api.h"
#include "apiserver/gc.h"
#include "kube/http_server.h"

namespace apiserver {

struct ServerOptions {
  std::string dataDir = ".foxden";
  std::string host = "127.0.0.1";
  uint16_t port = 6443;          // 0: any free port
  std::string crdsDir;           // YAML files applied at start; empty: none
  std::string version = "v1.32.0";
  size_t maxBodyBytes = 3 * 1024 * 1024;
  size_t historySize = 10000;    // watch events retained for resumption
  int bookmarkIntervalSeconds = 10;
};

class Server {
 public:
  static kube::StatusOr<std::unique_ptr<Server>> start(const ServerOptions& options);
  ~Server();
  uint16_t port() const { return http_ ? http_->port() : 0; }
  const std::string& kubeconfigPath() const { return kubeconfig_; }
  // Ends watches, stops serving and the collector. Idempotent.
  void stop();

 private:
  Server() = default;
  kube::Status bootstrap(const ServerOptions& options);
  kube::Status lockDataDir(const std::string& dir);
  // An flock on DATA_DIR/lock, held for the server's life: one server per data directory.
  struct DirLock {
    int fd = -1;
    DirLock() = default;
    DirLock(const DirLock&) = delete;
    DirLock& operator=(const DirLock&) = delete;
    ~DirLock();
  };
  DirLock lock_;  // first member: released after everything below is gone
  std::unique_ptr<Storage> storage_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<Api> api_;
  std::unique_ptr<GarbageCollector> gc_;
  kube::HttpServerPtr http_;
  std::string kubeconfig_;
};

}  // namespace apiserver
