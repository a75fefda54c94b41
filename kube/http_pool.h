#pragma once
// The request half of newHttpClient() (HttpClient::send and sendAll), without cpprestsdk:
// HTTP/1.1 keep-alive connections to one API server, over OpenSSL or plain TCP, driven by poll()
// on the calling thread. Used only by http_client.cc; watches (HttpClient::stream) stay on cpprest.
//
// Why: the operator's placements are one create each, and cpprest spent two thirds of the
// operator's CPU on them (pplx continuations on its pool's threads, each hand-off a wake-up), and
// it writes a request's headers and body as two TLS records, so the server's connection thread
// woke twice per request. Here a request is one SSL_write of headers and body, and a batch of
// requests (sendAll) runs on the caller's thread alone: one poll() sees every response that has
// arrived, with no other thread involved.
//
// Threading: run() may be called from many threads at once; each call uses connections of its own
// (taken from, and given back to, the shared idle pool).

#include <memory>
#include <span>
#include <vector>

#include "kube/http_client.h"

namespace kube {

class HttpPool {
 public:
  // Checks the URL and the PEMs of `config`; connects nothing yet.
  [[nodiscard]] static StatusOr<std::unique_ptr<HttpPool>> create(const RestConfig& config,
                                                                  const HttpClientOptions& options);
  ~HttpPool();
  HttpPool(const HttpPool&) = delete;
  HttpPool& operator=(const HttpPool&) = delete;

  // Sends every request, up to options.maxInFlight at a time (each on its own connection), and
  // returns their outcomes in order, as HttpClient::sendAll documents. Transport failures are
  // 503 ServiceUnavailable, no progress for requestTimeout 504 Timeout, a cancel 499 Canceled, a
  // request that cannot be written (a CR or LF in a header, a target that is not a path) 400
  // BadRequest without being sent.
  //
  // A server that answers before reading the whole request and closes (413 for a body over its
  // limit) breaks the write; the answer that had arrived is then the outcome, not a 503.
  //
  // A request that fails on a kept-alive connection before any byte of its response arrived is
  // sent once more on a new connection when it is idempotent (GET, HEAD, PUT, DELETE, OPTIONS) or
  // when not all of it was written; a create or a patch that may have reached the server is not.
  [[nodiscard]] std::vector<StatusOr<HttpResponse>> run(std::span<const HttpRequest> requests,
                                                        const SendAllOptions& options);

  // Connections kept open between calls, at most.
  static constexpr size_t kMaxIdle = 64;

  struct Impl;  // (opaque; public so that http_pool.cc's helpers may name it)

 private:
  explicit HttpPool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kube
