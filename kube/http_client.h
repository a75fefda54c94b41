#pragma once
// The client half of Foxden's HTTP seam: a small abstract HttpClient (one request -> status,
// headers, body; or a streaming request whose body is read line by line, as watches are) and
// newHttpClient(), its one implementation: requests over kube/http_pool.h (HTTP/1.1 on OpenSSL,
// driven by poll() on the calling thread), streams on cpprestsdk. cpprest headers stay inside
// http_client.cc (they cost ~12 s of compile per translation unit).
//
// Threading: an HttpClient may be used from many threads at once. Its calls block the calling
// thread, so never call them from a cpprest/pplx continuation or handler (that would starve the
// shared pplx pool). A LineStream is read by one thread; its cancel() may be called from any.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kube/kubeconfig.h"
#include "kube/status.h"

namespace kube {

// One-shot cancellation shared between the thread that waits and the thread that stops it.
// Thread-safe. Callbacks run exactly once: on cancel(), or at once when added after it.
class Canceller {
 public:
  void cancel();
  bool cancelled() const;
  // Returns an id for removeCallback(). The callback must not block and must not call back into
  // this Canceller.
  size_t addCallback(std::function<void()> cb);
  void removeCallback(size_t id);

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;                                // guarded by mu_
  size_t nextId_ = 0;                                     // guarded by mu_
  std::map<size_t, std::function<void()>> callbacks_;     // guarded by mu_
};

struct HttpRequest {
  std::string method = "GET";
  std::string target;  // path + optional "?query", already percent-encoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string contentType;  // required when body is non-empty
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// The body of a streaming response, read one line at a time.
class LineStream {
 public:
  virtual ~LineStream() = default;
  virtual int status() const = 0;
  // Blocks for the next line (without the trailing "\r\n"). Returns true with a line, false at the
  // end of the body, or an error (including Canceled after cancel(); code 499, reason Canceled).
  [[nodiscard]] virtual StatusOr<bool> readLine(std::string& line) = 0;
  // Closes the connection; a blocked readLine() returns promptly. Idempotent, any thread.
  virtual void cancel() = 0;
};
using LineStreamPtr = std::unique_ptr<LineStream>;

struct SendAllOptions {
  // Requests on the wire at once (each in flight holds one connection).
  size_t maxInFlight = 32;
  Canceller* cancel = nullptr;
  // Asked for each request just before it is sent (on whichever thread starts it: keep it short
  // and non-blocking); a non-OK Status becomes that request's outcome and it is not sent.
  std::function<Status(const HttpRequest&)> gate;
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // Sends a request and reads the whole response. Transport failures come back as
  // 503 ServiceUnavailable (or 504 Timeout); HTTP error statuses are NOT errors here.
  [[nodiscard]] virtual StatusOr<HttpResponse> send(const HttpRequest& request,
                                                    Canceller* cancel = nullptr) = 0;
  // Sends a request and returns once the response headers arrived; the body is read from the
  // stream. A non-2xx response's body can be read the same way.
  [[nodiscard]] virtual StatusOr<LineStreamPtr> stream(const HttpRequest& request,
                                                       Canceller* cancel = nullptr) = 0;
  // Sends every request, up to options.maxInFlight at a time, and returns their outcomes in the
  // requests' order (each as send() would). Blocks the calling thread until all are done; that
  // thread alone does the work, however many requests there are. This default sends them one by
  // one.
  [[nodiscard]] virtual std::vector<StatusOr<HttpResponse>> sendAll(const std::vector<HttpRequest>& requests,
                                                                    const SendAllOptions& options);
};
using HttpClientPtr = std::shared_ptr<HttpClient>;

struct HttpClientOptions {
  // An inactivity timer (reset whenever bytes move), not a deadline.
  std::chrono::seconds requestTimeout{30};
  // Watches are kept alive by bookmarks and end by timeoutSeconds; this only catches dead peers.
  std::chrono::seconds streamIdleTimeout{300};
  std::string userAgent = "foxden";
};

// Status code used for requests ended by a Canceller or LineStream::cancel().
inline constexpr int kCanceledCode = 499;
// The outcome of such a request.
inline Status canceledStatus() { return Status(kCanceledCode, "Canceled", "request canceled"); }

// Builds the client for `config` (TLS from the PEMs in memory, bearer token).
// Does not initialise cpprest's thread pool: main() may call
// crossplat::threadpool::initialize_with_threads() once, before any client exists.
[[nodiscard]] StatusOr<HttpClientPtr> newHttpClient(const RestConfig& config, HttpClientOptions options = {});

// Sizes cpprest's shared thread pool (default 40). Call once, in main(), before any client exists.
// The pool runs only the asynchronous I/O of watches (our calls block their own threads), so a
// small pool is enough, and a large one adds wake-ups between its threads.
void initHttpClientThreads(size_t threads);

// For a process whose only TLS peer is the API server of `config`: when the config carries a CA
// (kubeconfig certificate-authority[-data], or the in-cluster service-account ca.crt), points
// OpenSSL's default CA file at /dev/null. Every connection already trusts that CA alone (as
// client-go does), but cpprest first loads the default verify paths into each connection's
// context: the system bundle, ~140 certificates parsed and thrown away per connection (2.3 MiB of
// the idle agent's heap peak; under ASan, most of the CPU of an operator's start). Calls setenv:
// call in main(), before any other thread exists.
void trustOnlyConfigCa(const RestConfig& config);

}  // namespace kube
