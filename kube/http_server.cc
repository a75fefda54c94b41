// Boost.Beast implementation of kube::HttpServer: blocking I/O, one thread per connection.
//
// Why not cpprestsdk's http_listener (the mandated HTTP library is kept for the client side):
// its maintainers call the listener test-only, it cannot notice a dead client during an idle stream,
// and close() hangs while a streaming body is open. A thread per connection is simple, has no
// callback chains that can leak exceptions, and is plenty for one machine's control plane (kubectl,
// the operator and a few hundred agents' watches).
//
// Timeouts: asio's blocking reads ignore SO_RCVTIMEO (they poll again), so a reaper thread enforces
// per-connection deadlines by shutting the socket down, which wakes the blocked call.

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <list>
#include <map>
#include <vector>
#include <mutex>
#include <thread>

#include "kube/http_server.h"
#include "kube/thread_name.h"

namespace kube {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string percentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Per-connection bookkeeping shared with the reaper.
struct ConnState {
  int fd = -1;
  std::atomic<int64_t> deadlineMs{0};  // 0: no deadline
};

class BeastServer;

template <class Stream>
class Writer final : public ResponseWriter {
 public:
  Writer(Stream& stream, ConnState& state, unsigned version, bool keepAlive)
      : stream_(stream), state_(state), version_(version), keepAlive_(keepAlive) {}

  void setHeader(const std::string& name, const std::string& value) override {
    extraHeaders_.emplace_back(name, value);
  }

  void respond(int status, std::string_view contentType, std::string_view body) override {
    if (responded_) return;
    responded_ = true;
    // span_body writes straight from the caller's buffer: no copy of large list responses.
    http::response<http::span_body<const char>> res{static_cast<http::status>(status), version_};
    res.set(http::field::content_type, beast::string_view(contentType.data(), contentType.size()));
    res.set(http::field::cache_control, "no-cache, private");
    for (auto& [k, v] : extraHeaders_) res.set(k, v);
    res.keep_alive(keepAlive_);
    res.body() = boost::beast::span<const char>(body.data(), body.size());
    res.prepare_payload();
    beast::error_code ec;
    state_.deadlineMs = nowMs() + kWriteTimeoutMs;
    http::write(stream_, res, ec);
    state_.deadlineMs = 0;
    if (ec) failed_ = true;
  }

  bool beginStream(int status, std::string_view contentType) override {
    if (responded_) return false;
    responded_ = true;
    streaming_ = true;
    http::response<http::empty_body> res{static_cast<http::status>(status), version_};
    res.set(http::field::content_type, beast::string_view(contentType.data(), contentType.size()));
    res.set(http::field::cache_control, "no-cache, private");
    for (auto& [k, v] : extraHeaders_) res.set(k, v);
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    beast::error_code ec;
    state_.deadlineMs = nowMs() + kWriteTimeoutMs;
    http::write_header(stream_, sr, ec);
    state_.deadlineMs = 0;
    if (ec) failed_ = true;
    return !failed_;
  }

  bool write(std::string_view chunk) override {
    if (!streaming_ || failed_) return false;
    if (chunk.empty()) return true;  // an empty chunk would end the stream
    beast::error_code ec;
    state_.deadlineMs = nowMs() + kWriteTimeoutMs;
    asio::write(stream_, http::make_chunk(asio::buffer(chunk.data(), chunk.size())), ec);
    state_.deadlineMs = 0;
    if (ec) failed_ = true;
    return !failed_;
  }

  bool peerClosed() override {
    if (failed_) return true;
    pollfd p{state_.fd, POLLIN | POLLRDHUP, 0};
    int n = ::poll(&p, 1, 0);
    if (n <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    if (p.revents & POLLIN) {
      char c;
      ssize_t r = ::recv(state_.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (r == 0) return true;
    }
    return false;
  }

  // Finishes the exchange; returns whether the connection may serve another request.
  bool finish() {
    if (!responded_) {
      respond(500, "application/json",
              R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"handler produced no response","reason":"InternalError","code":500})");
    }
    if (streaming_ && !failed_) {
      beast::error_code ec;
      state_.deadlineMs = nowMs() + kWriteTimeoutMs;
      asio::write(stream_, http::make_chunk_last(), ec);
      state_.deadlineMs = 0;
      if (ec) failed_ = true;
    }
    return keepAlive_ && !failed_ && !streaming_;
  }

 private:
  static constexpr int64_t kWriteTimeoutMs = 30000;
  Stream& stream_;
  ConnState& state_;
  unsigned version_;
  bool keepAlive_;
  bool responded_ = false;
  bool streaming_ = false;
  bool failed_ = false;
  std::vector<std::pair<std::string, std::string>> extraHeaders_;
};

std::string statusBody(int code, std::string_view reason, std::string_view message) {
  return std::string(R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":")") +
         std::string(message) + R"(","reason":")" + std::string(reason) + R"(","code":)" +
         std::to_string(code) + "}";
}

class BeastServer final : public HttpServer {
 public:
  BeastServer(HttpServerOptions opts, Handler handler)
      : opts_(std::move(opts)), handler_(std::move(handler)), acceptor_(ioc_) {}

  ~BeastServer() override { stop(); }

  Status start() {
    try {
      if (!opts_.certFile.empty()) {
        ssl_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
        ssl_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                          asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                          asio::ssl::context::no_tlsv1_1);
        ssl_->use_certificate_chain_file(opts_.certFile);
        ssl_->use_private_key_file(opts_.keyFile, asio::ssl::context::pem);
      }
      tcp::endpoint ep(asio::ip::make_address(opts_.host), opts_.port);
      acceptor_.open(ep.protocol());
      acceptor_.set_option(asio::socket_base::reuse_address(true));
      acceptor_.bind(ep);
      acceptor_.listen(asio::socket_base::max_listen_connections);
      port_ = acceptor_.local_endpoint().port();
    } catch (const std::exception& e) {
      return Status::unavailable("cannot listen on " + opts_.host + ":" +
                                 std::to_string(opts_.port) + ": " + e.what());
    }
    acceptThread_ = std::thread([this] {
      nameThread("http-accept");
      acceptLoop();
    });
    reaperThread_ = std::thread([this] {
      nameThread("http-reaper");
      reapLoop();
    });
    return Status::ok();
  }

  uint16_t port() const override { return port_; }

  void stop() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      stopping_ = true;
      for (auto* c : conns_) ::shutdown(c->fd, SHUT_RDWR);
    }
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    reaperCv_.notify_all();
    if (acceptThread_.joinable()) acceptThread_.join();
    if (reaperThread_.joinable()) reaperThread_.join();
    // Streaming handlers notice the shut-down socket on their next write or peerClosed() check.
    // Joining (not just waiting for a count) means no connection thread can still be touching
    // this object when stop() returns and the server is destroyed.
    std::map<uint64_t, std::thread> threads;
    {
      std::lock_guard<std::mutex> l(mu_);
      threads.swap(threads_);
      finished_.clear();
    }
    for (auto& [id, t] : threads) t.join();
    beast::error_code ec;
    acceptor_.close(ec);
  }

 private:
  void acceptLoop() {
    for (;;) {
      beast::error_code ec;
      tcp::socket sock(ioc_);
      acceptor_.accept(sock, ec);
      std::unique_lock<std::mutex> l(mu_);
      if (stopping_) return;
      if (ec) {
        l.unlock();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // EMFILE and friends
        continue;
      }
      if (conns_.size() >= opts_.maxConnections) {
        sock.close(ec);
        continue;
      }
      auto state = std::make_shared<ConnState>();
      state->fd = sock.native_handle();
      conns_.push_back(state.get());
      uint64_t id = nextThreadId_++;
      threads_.emplace(id, std::thread([this, s = std::move(sock), state, id]() mutable {
        nameThread("http-conn");
        try {
          serve(std::move(s), *state);
        } catch (const std::exception&) {
          // A connection's failure is that connection's alone.
        }
        std::lock_guard<std::mutex> g(mu_);
        conns_.remove(state.get());
        finished_.push_back(id);  // the reaper joins it
      }));
    }
  }

  // Joins connection threads that have ended (outside the lock: a thread ends by taking it).
  void joinFinished() {
    std::vector<std::thread> done;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (uint64_t id : finished_) {
        auto it = threads_.find(id);
        if (it != threads_.end()) {
          done.push_back(std::move(it->second));
          threads_.erase(it);
        }
      }
      finished_.clear();
    }
    for (auto& t : done) t.join();
  }

  void reapLoop() {
    std::unique_lock<std::mutex> l(mu_);
    while (!stopping_) {
      reaperCv_.wait_for(l, std::chrono::milliseconds(500));
      int64_t now = nowMs();
      for (auto* c : conns_) {
        int64_t d = c->deadlineMs.load();
        if (d != 0 && now > d) ::shutdown(c->fd, SHUT_RDWR);
      }
      l.unlock();
      joinFinished();
      l.lock();
    }
  }

  // Removes a connection from the reaper's list. Declared after the socket objects in serve() so
  // it runs before they close the descriptor: the reaper must never shut down a reused fd number.
  struct Deregister {
    BeastServer* server;
    ConnState* state;
    ~Deregister() {
      std::lock_guard<std::mutex> g(server->mu_);
      server->conns_.remove(state);
    }
  };

  void serve(tcp::socket sock, ConnState& state) {
    beast::error_code ec;
    sock.set_option(tcp::no_delay(true), ec);
    std::string remote;
    auto rep = sock.remote_endpoint(ec);
    if (!ec) remote = rep.address().to_string() + ":" + std::to_string(rep.port());
    if (ssl_) {
      asio::ssl::stream<tcp::socket> stream(std::move(sock), *ssl_);
      Deregister guard{this, &state};
      state.deadlineMs = nowMs() + 10000;
      stream.handshake(asio::ssl::stream_base::server, ec);
      state.deadlineMs = 0;
      if (ec) return;
      session(stream, state, remote);
      stream.shutdown(ec);
    } else {
      Deregister guard{this, &state};
      session(sock, state, remote);
      sock.shutdown(tcp::socket::shutdown_both, ec);
    }
  }

  template <class Stream>
  void session(Stream& stream, ConnState& state, const std::string& remote) {
    beast::flat_buffer buf;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(opts_.maxBodyBytes);
      parser.header_limit(64 * 1024);
      beast::error_code ec;
      state.deadlineMs = nowMs() + int64_t(opts_.idleTimeoutSeconds) * 1000;
      http::read(stream, buf, parser, ec);
      state.deadlineMs = 0;
      if (ec == http::error::body_limit) {
        Writer<Stream> w(stream, state, 11, false);
        w.respond(413, "application/json",
                  statusBody(413, "RequestEntityTooLarge",
                             "the request body exceeds the limit of " +
                                 std::to_string(opts_.maxBodyBytes) + " bytes"));
        return;
      }
      if (ec == http::error::end_of_stream || ec) {
        if (ec != http::error::end_of_stream && ec != asio::error::eof &&
            ec != asio::ssl::error::stream_truncated && buf.size() > 0) {
          Writer<Stream> w(stream, state, 11, false);
          w.respond(400, "application/json",
                    statusBody(400, "BadRequest", "malformed HTTP request"));
        }
        return;
      }
      auto& req = parser.get();
      ServerRequest r;
      r.method = std::string(req.method_string());
      r.target = std::string(req.target());
      auto q = r.target.find('?');
      r.path = percentDecode(std::string_view(r.target).substr(0, q));
      if (q != std::string::npos) r.query = r.target.substr(q + 1);
      for (const auto& f : req) {
        std::string name(f.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        auto& slot = r.headers[name];
        if (!slot.empty()) slot += ",";
        slot += std::string(f.value());
      }
      r.body = std::move(req.body());
      r.remoteAddr = remote;
      Writer<Stream> w(stream, state, req.version(), req.keep_alive());
      try {
        handler_(r, w);
      } catch (const std::exception& e) {
        w.respond(500, "application/json", statusBody(500, "InternalError", "internal error"));
      }
      if (!w.finish()) return;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stopping_) return;
      }
    }
  }

  HttpServerOptions opts_;
  Handler handler_;
  asio::io_context ioc_;
  std::unique_ptr<asio::ssl::context> ssl_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::thread acceptThread_;
  std::thread reaperThread_;

  std::mutex mu_;
  std::condition_variable reaperCv_;
  bool stopping_ = false;             // guarded by mu_
  std::list<ConnState*> conns_;       // guarded by mu_
  std::map<uint64_t, std::thread> threads_;  // connection threads, guarded by mu_
  std::vector<uint64_t> finished_;           // ended, not yet joined; guarded by mu_
  uint64_t nextThreadId_ = 0;                // guarded by mu_
};

}  // namespace

StatusOr<HttpServerPtr> startHttpServer(const HttpServerOptions& options, Handler handler) {
  auto s = std::make_unique<BeastServer>(options, std::move(handler));
  Status st = s->start();
  if (!st) return st;
  return HttpServerPtr(std::move(s));
}

}  // namespace kube
