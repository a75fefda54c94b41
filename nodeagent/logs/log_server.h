#pragma once
// The agent's log endpoint: HTTPS (kube/http_server.h) on --listen, serving the rotated files that
// task inits write (rotator.h, log_files.h).
//
//   GET /logs/<namespace>/<allocation>/<task>?stream=stdout|stderr&tail=N&follow=true
//       &from=<index>:<offset>&frames=true
//
//   client ──TLS──► connection thread: bearer token ─► TokenReviewer (cache, 10 s) ─► API server
//                                      authorise (system:masters), names, allocation (informer)
//                                      LogFollower ─► chunked body, until EOF or, with follow,
//                                      until the allocation is gone, the client leaves or stop()
//
// The response carries `X-Foxden-Log-Cursor: <index>:<offset>`, the cursor of its first byte. With
// frames=true the body is a sequence of `<index>:<offset> <length>\n` + <length> bytes, so a client
// always knows the cursor of the next byte and can resume after a reconnect (foxden logs -f) with
// neither gap nor repeat; a zero-length frame says the stream jumped there because the bytes
// before it were rotated away. Errors are Kubernetes Status JSON: 401 without a valid token, 403 for
// identities other than the cluster admin, 400 for malformed names and parameters, 404 for an
// unknown allocation or task, 503 while the agent cannot tell (starting, API unreachable).
//
// Threads: the HTTP server's (one per connection); TokenReviewer is thread-safe.

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kube/http_server.h"
#include "kube/json.h"
#include "kube/rest_client.h"
#include "kube/status.h"

namespace nodeagent::logs {

struct Caller {
  std::string user;
  std::vector<std::string> groups;
};

// Checks bearer tokens with the API server's authentication.k8s.io/v1 TokenReview, remembering
// each answer (valid or not) for `ttl`, at most `maxEntries` of them. Tokens are kept only as
// SHA-256 digests.
class TokenReviewer {
 public:
  explicit TokenReviewer(kube::RestClientPtr client, std::chrono::milliseconds ttl = std::chrono::seconds(10),
                         size_t maxEntries = 1024);
  // The caller, nullopt for a token the API server rejects, or an error when it could not be asked.
  [[nodiscard]] kube::StatusOr<std::optional<Caller>> review(const std::string& token);

 private:
  struct Entry {
    std::optional<Caller> caller;
    std::chrono::steady_clock::time_point expires;
  };
  const kube::RestClientPtr client_;
  const std::chrono::milliseconds ttl_;
  const size_t maxEntries_;
  std::mutex mu_;
  std::map<std::string, Entry> cache_;  // guarded by mu_; key: SHA-256 of the token
};

struct LogServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 10250;
  std::string certFile, keyFile;
  std::string dataDir;  // task logs are DATA/allocs/<uid>/<task>/logs
  // "namespace/name" -> the Allocation bound to this worker, or nullptr.
  std::function<kube::JsonPtr(const std::string& key)> allocation;
  // False until the allocation cache is synced (answers are then 503, not a false 404).
  std::function<bool()> ready;
  std::function<kube::StatusOr<std::optional<Caller>>(const std::string& token)> authenticate;
  int pollMillis = 100;  // how often a follower looks for new data
};

class LogServer {
 public:
  [[nodiscard]] static kube::StatusOr<std::unique_ptr<LogServer>> start(LogServerOptions options);
  ~LogServer();
  uint16_t port() const;
  // Ends every stream and stops serving; idempotent.
  void stop();

 private:
  explicit LogServer(LogServerOptions options) : options_(std::move(options)) {}
  void handle(const kube::ServerRequest& req, kube::ResponseWriter& w);

  const LogServerOptions options_;
  std::atomic<bool> stopping_{false};
  kube::HttpServerPtr http_;
};

}  // namespace nodeagent::logs
