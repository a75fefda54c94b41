// The request path of newHttpClient() (kube/http_pool.cc) against a scripted plain-TCP server that
// misbehaves on purpose: closes kept-alive connections, hangs, answers garbage, chunked bodies,
// bodies that end with the connection. TLS is covered by http_client_test.cc.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kube/http_client.h"

namespace kube {
namespace {

// What the scripted server does with one request.
struct Reply {
  std::string bytes;   // written as is
  bool close = false;  // close the connection after writing
  bool hang = false;   // write nothing and keep the connection open until the server stops
};

struct Seen {
  int conn;         // the connection's number, from 0, in accept order
  std::string head; // request line and headers
  std::string body;
};

// A plain-TCP HTTP/1.1 server, a thread per connection, that answers each request with script().
class ScriptedServer {
 public:
  using Script = std::function<Reply(const Seen&, int /*nth request overall, from 0*/)>;

  explicit ScriptedServer(Script script) : script_(std::move(script)) {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_, 64) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { acceptLoop(); });
  }

  ~ScriptedServer() {
    stopping_ = true;
    ::shutdown(listen_, SHUT_RDWR);
    acceptor_.join();
    {
      std::lock_guard l(mu_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conns_) t.join();
    ::close(listen_);
  }

  std::string url(const std::string& path = "") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  int connections() const { return accepted_.load(); }
  // Waits (10 s at most) until the server has closed every connection it accepted.
  bool waitAllClosed() {
    for (int i = 0; i < 1000; ++i) {
      {
        std::lock_guard l(mu_);
        if (open_.empty()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  std::vector<Seen> seen() {
    std::lock_guard l(mu_);
    return seen_;
  }

 private:
  void acceptLoop() {
    while (!stopping_) {
      int fd = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      int n = accepted_++;
      {
        std::lock_guard l(mu_);
        open_.push_back(fd);
      }
      conns_.emplace_back([this, fd, n] { serve(fd, n); });
    }
  }

  void serve(int fd, int connNo) {
    std::string buf;
    char chunk[4096];
    for (;;) {
      size_t headEnd;
      while ((headEnd = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t r = ::recv(fd, chunk, sizeof chunk, 0);
        if (r <= 0) return finish(fd);
        buf.append(chunk, static_cast<size_t>(r));
      }
      Seen s{connNo, buf.substr(0, headEnd), ""};
      size_t want = 0;
      if (size_t cl = s.head.find("Content-Length: "); cl != std::string::npos) want = std::stoul(s.head.substr(cl + 16));
      buf.erase(0, headEnd + 4);
      if (want > kBodyLimit) {  // as a real server does: answer at once, close with the body unread
        static constexpr std::string_view k413 = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large";
        (void)::send(fd, k413.data(), k413.size(), MSG_NOSIGNAL);
        return finish(fd);
      }
      while (buf.size() < want) {
        ssize_t r = ::recv(fd, chunk, sizeof chunk, 0);
        if (r <= 0) return finish(fd);
        buf.append(chunk, static_cast<size_t>(r));
      }
      s.body = buf.substr(0, want);
      buf.erase(0, want);
      int nth;
      {
        std::lock_guard l(mu_);
        nth = static_cast<int>(seen_.size());
        seen_.push_back(s);
      }
      Reply reply = script_(s, nth);
      if (reply.hang) {
        while (::recv(fd, chunk, sizeof chunk, 0) > 0) {
        }
        return finish(fd);
      }
      size_t off = 0;
      while (off < reply.bytes.size()) {
        ssize_t w = ::send(fd, reply.bytes.data() + off, reply.bytes.size() - off, MSG_NOSIGNAL);
        if (w <= 0) return finish(fd);
        off += static_cast<size_t>(w);
      }
      if (reply.close) return finish(fd);
    }
  }

  void finish(int fd) {
    std::lock_guard l(mu_);
    std::erase(open_, fd);
    ::close(fd);
  }

  static constexpr size_t kBodyLimit = size_t{1} << 20;
  Script script_;
  int listen_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> accepted_{0};
  std::thread acceptor_;
  std::vector<std::thread> conns_;  // touched by the acceptor only, joined after it
  std::mutex mu_;
  std::vector<int> open_;   // guarded by mu_
  std::vector<Seen> seen_;  // guarded by mu_
};

std::string ok(const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

HttpClientPtr clientFor(const std::string& url, std::chrono::seconds timeout = std::chrono::seconds(30)) {
  RestConfig c;
  c.server = url;
  c.bearerToken = "t0ken";
  HttpClientOptions o;
  o.requestTimeout = timeout;
  o.userAgent = "pool-test";
  auto client = newHttpClient(c, o);
  REQUIRE_MESSAGE(client.isOk(), client.status().toString());
  return *client;
}

HttpRequest get(const std::string& target) {
  HttpRequest rq;
  rq.target = target;
  return rq;
}

HttpRequest post(const std::string& target, const std::string& body) {
  HttpRequest rq;
  rq.method = "POST";
  rq.target = target;
  rq.body = body;
  rq.contentType = "application/json";
  return rq;
}

TEST_CASE("http pool: one connection carries sequential requests; headers and body go out as one request") {
  ScriptedServer srv([](const Seen& s, int n) {
    return Reply{ok("{\"n\":" + std::to_string(n) + "}", "X-Dup: a\r\nX-Dup: b\r\n")};
    (void)s;
  });
  auto client = clientFor(srv.url());
  for (int i = 0; i < 20; ++i) {
    auto r = client->send(i % 2 == 0 ? get("/api/" + std::to_string(i)) : post("/api", "{\"i\":1}"));
    REQUIRE_MESSAGE(r.isOk(), r.status().toString());
    CHECK(r->status == 200);
    CHECK(r->body == "{\"n\":" + std::to_string(i) + "}");
    CHECK(r->headers["x-dup"] == "a, b");
    CHECK(r->headers["content-type"] == "application/json");
  }
  CHECK(srv.connections() == 1);
  auto seen = srv.seen();
  REQUIRE(seen.size() == 20);
  CHECK(seen[0].head.rfind("GET /api/0 HTTP/1.1\r\n", 0) == 0);
  CHECK(seen[0].head.find("\r\nHost: 127.0.0.1:") != std::string::npos);
  CHECK(seen[0].head.find("\r\nAuthorization: Bearer t0ken") != std::string::npos);
  CHECK(seen[0].head.find("\r\nUser-Agent: pool-test") != std::string::npos);
  CHECK(seen[0].head.find("\r\nAccept: application/json") != std::string::npos);
  CHECK(seen[1].head.rfind("POST /api HTTP/1.1\r\n", 0) == 0);
  CHECK(seen[1].head.find("\r\nContent-Type: application/json") != std::string::npos);
  CHECK(seen[1].body == "{\"i\":1}");
}

TEST_CASE("http pool: a connection the server closed while idle is not reused") {
  ScriptedServer srv([](const Seen&, int) { return Reply{ok("{}"), /*close=*/true}; });
  auto client = clientFor(srv.url());
  for (int i = 0; i < 5; ++i) {
    // Each answer says nothing of closing, but the server closes: the next request notices the
    // closed connection before writing to it (or retries a GET that met the close).
    auto r = client->send(post("/api", "{}"));
    REQUIRE_MESSAGE(r.isOk(), r.status().toString());
    REQUIRE(srv.waitAllClosed());  // (a create is not retried: it must meet the close while idle)
  }
  CHECK(srv.connections() == 5);
  CHECK(srv.seen().size() == 5);  // every create reached the server exactly once
}

TEST_CASE("http pool: a kept-alive connection that drops a request: a GET is sent again, a POST is not") {
  // Request 1 arrives on the kept-alive connection of request 0; the server drops it unanswered.
  std::atomic<int> dropAt{1};
  ScriptedServer srv([&](const Seen&, int n) {
    if (n == dropAt.load()) return Reply{"", /*close=*/true};
    return Reply{ok("{}")};
  });
  auto client = clientFor(srv.url());
  REQUIRE(client->send(get("/a")).isOk());
  auto r = client->send(get("/b"));
  REQUIRE_MESSAGE(r.isOk(), r.status().toString());  // retried on a new connection
  CHECK(srv.seen().size() == 3);
  CHECK(srv.connections() == 2);

  dropAt = 4;  // request 3 opens the kept-alive connection, request 4 (a POST) is dropped on it
  REQUIRE(client->send(get("/c")).isOk());
  auto p = client->send(post("/create", "{}"));
  REQUIRE_FALSE(p.isOk());
  CHECK(p.status().code() == 503);
  CHECK(p.status().message().find("closed the connection before answering") != std::string::npos);
  CHECK(srv.seen().size() == 5);  // the create was not sent twice
}

TEST_CASE("http pool: chunked bodies, bodies that end with the connection, HEAD, and large bodies") {
  std::string big(8 << 20, 'x');
  ScriptedServer srv([&](const Seen& s, int) {
    if (s.head.rfind("GET /chunked", 0) == 0) {
      return Reply{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"};
    }
    if (s.head.rfind("GET /eof", 0) == 0) return Reply{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", true};
    if (s.head.rfind("HEAD ", 0) == 0) return Reply{"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"};
    if (s.head.rfind("GET /big", 0) == 0) return Reply{ok(big)};
    return Reply{"HTTP/1.1 204 No Content\r\n\r\n"};
  });
  auto client = clientFor(srv.url());
  auto c = client->send(get("/chunked"));
  REQUIRE_MESSAGE(c.isOk(), c.status().toString());
  CHECK(c->body == "abcdefg");
  auto e = client->send(get("/eof"));
  REQUIRE_MESSAGE(e.isOk(), e.status().toString());
  CHECK(e->body == "until the end");
  HttpRequest head = get("/h");
  head.method = "HEAD";
  auto h = client->send(head);
  REQUIRE_MESSAGE(h.isOk(), h.status().toString());
  CHECK(h->status == 200);
  CHECK(h->body.empty());
  auto b = client->send(get("/big"));
  REQUIRE_MESSAGE(b.isOk(), b.status().toString());
  CHECK(b->body.size() == big.size());
  // A body over the server's limit: it answers 413 and closes before reading the rest, so the
  // write breaks; the answer that had arrived is the outcome.
  auto large = client->send(post("/big-create", "\"" + std::string(8 << 20, 'y') + "\""));
  REQUIRE_MESSAGE(large.isOk(), large.status().toString());
  CHECK(large->status == 413);
  CHECK(large->body == "too large");
  HttpRequest del = get("/x");
  del.method = "DELETE";
  auto d = client->send(del);
  REQUIRE_MESSAGE(d.isOk(), d.status().toString());
  CHECK(d->status == 204);
}

TEST_CASE("http pool: garbage, a server that never answers, a cancel, and a refused connection") {
  ScriptedServer srv([](const Seen& s, int) {
    if (s.head.rfind("GET /garbage", 0) == 0) return Reply{"SSH-2.0-OpenSSH_9.2\r\n\r\n"};
    if (s.head.rfind("GET /truncated", 0) == 0) return Reply{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true};
    return Reply{"", false, /*hang=*/true};
  });
  auto client = clientFor(srv.url(), std::chrono::seconds(1));
  auto g = client->send(get("/garbage"));
  REQUIRE_FALSE(g.isOk());
  CHECK(g.status().code() == 503);
  CHECK(g.status().message().find("bad response") != std::string::npos);

  auto t = client->send(get("/truncated"));
  REQUIRE_FALSE(t.isOk());
  CHECK(t.status().code() == 503);
  CHECK(t.status().message().find("in the middle of the response") != std::string::npos);

  auto hung = client->send(get("/hang"));
  REQUIRE_FALSE(hung.isOk());
  CHECK(hung.status().code() == 504);

  auto patient = clientFor(srv.url());
  Canceller cancel;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cancel.cancel();
  });
  auto start = std::chrono::steady_clock::now();
  std::vector<HttpRequest> many(10, get("/hang"));
  SendAllOptions o;
  o.maxInFlight = 4;
  o.cancel = &cancel;
  auto outs = patient->sendAll(many, o);
  canceller.join();
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));  // (30 s without the cancel)
  for (const auto& r : outs) CHECK(r.status().reason() == "Canceled");

  // Nothing listens: every request of a batch fails with 503, one after another, without
  // recursing (a thousand would overflow a stack that did).
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  auto refused = clientFor("http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)));
  auto none = refused->sendAll(std::vector<HttpRequest>(1000, get("/x")), {});
  ::close(fd);
  REQUIRE(none.size() == 1000);
  for (const auto& r : none) {
    CHECK(r.status().code() == 503);
    CHECK(r.status().message().find("cannot connect") != std::string::npos);
  }
}

TEST_CASE("http pool: hostile requests are refused before sending; bad server URLs at construction") {
  ScriptedServer srv([](const Seen&, int) { return Reply{ok("{}")}; });
  auto client = clientFor(srv.url("/prefix/"));
  auto r = client->send(get("/api?x=1"));
  REQUIRE_MESSAGE(r.isOk(), r.status().toString());
  REQUIRE(srv.seen().size() == 1);
  CHECK(srv.seen()[0].head.rfind("GET /prefix/api?x=1 HTTP/1.1\r\n", 0) == 0);  // the URL's path is a prefix

  HttpRequest injected = get("/api");
  injected.headers.emplace_back("X-Evil", "a\r\nX-Injected: 1");
  HttpRequest spaced = get("/api HTTP/1.1\r\nHost: x");
  HttpRequest absolute = get("http://elsewhere/api");
  HttpRequest method = get("/api");
  method.method = "GE T";
  HttpRequest host = get("/api");
  host.headers.emplace_back("Host", "elsewhere");
  HttpRequest typeBreak = post("/api", "{}");
  typeBreak.contentType = "application/json\r\nX: y";
  for (const auto& bad : {injected, spaced, absolute, method, host, typeBreak}) {
    CAPTURE(bad.target);
    auto out = client->send(bad);
    REQUIRE_FALSE(out.isOk());
    CHECK(out.status().code() == 400);
  }
  CHECK(srv.seen().size() == 1);  // none of them reached the server

  for (const char* url : {"https://", "http://[::1", "http://host:99999", "http://a:b:c", "http://user@host",
                          "http://host:", "ftp://host", "http://host/p?q=1"}) {
    CAPTURE(url);
    RestConfig c;
    c.server = url;
    CHECK_FALSE(newHttpClient(c).isOk());
  }
  RestConfig tokenBreak;
  tokenBreak.server = srv.url();
  tokenBreak.bearerToken = "a\r\nX-Injected: 1";
  CHECK_FALSE(newHttpClient(tokenBreak).isOk());
}

}  // namespace
}  // namespace kube
