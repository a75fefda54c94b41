#pragma once
// A small HTTP/1.1 server interface (TLS or plain) used by `foxden server` and the agent's log
// endpoint. The implementation (http_server.cc) is Boost.Beast with one thread per connection;
// nothing outside that file sees Beast.
//
// Threads: one acceptor thread; one thread per open connection, which calls the Handler
// synchronously. A handler may stream (watch): it owns the connection's thread until it returns.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "kube/status.h"

namespace kube {

struct ServerRequest {
  std::string method;      // "GET", "POST", ...
  std::string target;      // raw request target: path + "?" + query
  std::string path;        // percent-decoded path
  std::string query;       // raw query string (without '?')
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string remoteAddr;

  std::string header(const std::string& lowerName) const {
    auto it = headers.find(lowerName);
    return it == headers.end() ? std::string() : it->second;
  }
};

// How a handler answers. Either respond() once, or beginStream() then any number of write() calls;
// the stream ends (terminal chunk) when the handler returns.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void setHeader(const std::string& name, const std::string& value) = 0;
  virtual void respond(int status, std::string_view contentType, std::string_view body) = 0;
  // Starts a chunked response. Returns false if the peer is gone.
  virtual bool beginStream(int status, std::string_view contentType) = 0;
  // Writes one chunk and flushes it. Returns false once the peer is gone.
  virtual bool write(std::string_view chunk) = 0;
  // True when the peer has closed its side (checked without blocking). Lets an idle stream notice
  // a dead client between events.
  virtual bool peerClosed() = 0;
};

using Handler = std::function<void(const ServerRequest&, ResponseWriter&)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;              // 0: pick a free port
  std::string certFile;           // empty: plain HTTP
  std::string keyFile;
  size_t maxBodyBytes = 3 * 1024 * 1024;  // the apiserver's own limit is 3 MiB
  size_t maxConnections = 2048;
  int idleTimeoutSeconds = 300;   // keep-alive connections idle longer than this are closed
};

class HttpServer {
 public:
  virtual ~HttpServer() = default;
  virtual uint16_t port() const = 0;
  // Stops accepting, closes idle connections and waits for handlers to return. Streaming handlers
  // must be told to finish by their owner first (see apiserver/watch.h).
  virtual void stop() = 0;
};
using HttpServerPtr = std::unique_ptr<HttpServer>;

StatusOr<HttpServerPtr> startHttpServer(const HttpServerOptions& options, Handler handler);

}  // namespace kube
