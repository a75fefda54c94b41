// HttpPool: HTTP/1.1 requests over kept-alive connections, one poll() loop per call on the
// caller's thread. See http_pool.h.
//
// Each call of run() owns "slots", one per request in flight. A slot's request goes through
//   Open -> (Connect -> Handshake ->) Write -> Read
// and a step that would block sets the poll events it waits for. Responses are parsed with
// Beast's parser (chunked and Content-Length bodies, or a body that ends with the connection).
// Sockets are written with MSG_NOSIGNAL (a BIO of our own under OpenSSL), so a peer that hangs up
// is an error return, never SIGPIPE, whatever the process does with that signal.
#include "kube/http_pool.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <limits>
#include <mutex>

namespace kube {

namespace {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

constexpr size_t kNone = std::numeric_limits<size_t>::max();
constexpr size_t kReadChunk = size_t{16} * 1024;
constexpr uint32_t kHeaderLimit = 64 * 1024;
// Servers close idle connections on their own clock (Go's http.Server: 90 s unless set); one idle
// longer than this is closed rather than reused.
constexpr auto kMaxIdleAge = std::chrono::seconds(60);

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Drains OpenSSL's error queue into one line.
std::string sslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

// ---- the server's URL ----

struct Endpoint {
  bool tls = false;
  std::string host;        // without an IPv6 literal's brackets
  std::string port;
  std::string hostHeader;  // the URL's authority, as written
  std::string basePath;    // "" or "/prefix" (no trailing slash): prepended to every target
  bool hostIsIp = false;
};

bool allDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

StatusOr<Endpoint> parseServer(const std::string& url) {
  Endpoint e;
  std::string_view rest(url);
  if (rest.rfind("https://", 0) == 0) {
    e.tls = true;
    rest.remove_prefix(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else {
    return Status::invalid("API server URL must start with http:// or https://: " + url);
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    e.basePath = std::string(rest.substr(slash));
    while (!e.basePath.empty() && e.basePath.back() == '/') e.basePath.pop_back();
  }
  auto bad = [&](const std::string& why) { return Status::invalid("API server URL " + url + ": " + why); };
  if (authority.empty()) return bad("no host");
  if (authority.find_first_of("@?# ") != std::string_view::npos) return bad("unexpected character in the host");
  if (e.basePath.find_first_of("?# \r\n") != std::string::npos) return bad("the path may not carry a query");
  e.hostHeader = std::string(authority);
  std::string_view port;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 literal");
    e.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("unexpected text after the IPv6 literal");
      port = after.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else {
    size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':') != colon) return bad("an IPv6 address must be in brackets");
      port = authority.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
    e.host = std::string(authority.substr(0, colon));
  }
  if (e.host.empty()) return bad("no host");
  if (port.empty()) {
    e.port = e.tls ? "443" : "80";
  } else {
    if (!allDigits(port) || port.size() > 5 || std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535) {
      return bad("bad port " + std::string(port));
    }
    e.port = std::string(port);
  }
  unsigned char addr[sizeof(in6_addr)];
  e.hostIsIp = inet_pton(AF_INET, e.host.c_str(), addr) == 1 || inet_pton(AF_INET6, e.host.c_str(), addr) == 1;
  return e;
}

// ---- a socket BIO that writes with MSG_NOSIGNAL ----

int bioFd(BIO* b) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b))); }

bool wouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

int bioWrite(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n = ::send(bioFd(b), data, static_cast<size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && wouldBlock(errno)) BIO_set_retry_write(b);
  return static_cast<int>(n);
}

int bioRead(BIO* b, char* data, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n = ::recv(bioFd(b), data, static_cast<size_t>(len), 0);
  if (n < 0 && wouldBlock(errno)) BIO_set_retry_read(b);
  return static_cast<int>(n);
}

long bioCtrl(BIO* /*b*/, int cmd, long /*num*/, void* /*ptr*/) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int bioCreate(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* socketMethod() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "foxden socket");
    BIO_meth_set_write(m, bioWrite);
    BIO_meth_set_read(m, bioRead);
    BIO_meth_set_ctrl(m, bioCtrl);
    BIO_meth_set_create(m, bioCreate);
    return m;
  }();
  return method;
}

// ---- connections ----

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  Clock::time_point idleSince{};

  Conn() = default;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  ~Conn() {
    if (ssl != nullptr) SSL_free(ssl);
    if (fd >= 0) ::close(fd);
  }
};
using ConnPtr = std::unique_ptr<Conn>;

enum class Io { Ok, WantRead, WantWrite, Eof, Error };

// Classifies a failed SSL call; errno was cleared before it, so SSL_ERROR_SYSCALL with errno 0 is
// an end of file.
Io sslOutcome(SSL* ssl, int rc, std::string& err) {
  switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      return Io::WantRead;
    case SSL_ERROR_WANT_WRITE:
      return Io::WantWrite;
    case SSL_ERROR_ZERO_RETURN:
      return Io::Eof;
    case SSL_ERROR_SYSCALL:
      if (errno == 0 && ERR_peek_error() == 0) return Io::Eof;
      err = errno != 0 ? std::strerror(errno) : sslErrors();
      ERR_clear_error();
      return Io::Error;
    default:
      err = sslErrors();
      return Io::Error;
  }
}

Io readSome(Conn& c, char* buf, size_t cap, size_t& n, std::string& err) {
  n = 0;
  if (c.ssl != nullptr) {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_read_ex(c.ssl, buf, cap, &n);
    return rc == 1 ? Io::Ok : sslOutcome(c.ssl, rc, err);
  }
  for (;;) {
    ssize_t r = ::recv(c.fd, buf, cap, 0);
    if (r > 0) {
      n = static_cast<size_t>(r);
      return Io::Ok;
    }
    if (r == 0) return Io::Eof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::WantRead;
    err = std::strerror(errno);
    return Io::Error;
  }
}

Io writeSome(Conn& c, const char* data, size_t len, size_t& n, std::string& err) {
  n = 0;
  if (c.ssl != nullptr) {
    ERR_clear_error();
    errno = 0;
    int rc = SSL_write_ex(c.ssl, data, len, &n);
    return rc == 1 ? Io::Ok : sslOutcome(c.ssl, rc, err);
  }
  for (;;) {
    ssize_t r = ::send(c.fd, data, len, MSG_NOSIGNAL);
    if (r >= 0) {
      n = static_cast<size_t>(r);
      return Io::Ok;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::WantWrite;
    err = std::strerror(errno);
    return Io::Error;
  }
}

struct Address {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_UNSPEC;
};

// ---- requests ----

// RFC 9110 token characters (methods and header names).
bool isToken(std::string_view s) {
  static constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) != 0 || kExtra.find(c) != std::string_view::npos;
         });
}

bool isFieldValue(std::string_view s) { return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos; }

bool isTarget(std::string_view s) {
  return !s.empty() && s.front() == '/' && std::none_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f || c == '#';
  });
}

bool isIdempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS";
}

using Parser = http::response_parser<http::string_body>;

}  // namespace

// ---- the pool ----

struct HttpPool::Impl {
  Endpoint ep;
  RestConfig config;
  HttpClientOptions options;
  SSL_CTX* ctx = nullptr;  // owned; null for http://

  std::mutex mu;
  std::vector<ConnPtr> idle;  // guarded by mu; the most recently used last

  ~Impl() {
    idle.clear();
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }

  // The most recently used idle connection that the server has not closed meanwhile, or null.
  ConnPtr takeIdle() {
    auto now = Clock::now();
    for (;;) {
      ConnPtr c;
      {
        std::lock_guard l(mu);
        if (idle.empty()) return nullptr;
        c = std::move(idle.back());
        idle.pop_back();
      }
      if (now - c->idleSince > kMaxIdleAge) continue;
      // Readable while idle: the server's FIN (it closed the connection), or bytes nobody asked for.
      pollfd p{c->fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&p, 1, 0) != 0) continue;
      return c;
    }
  }

  void giveBack(ConnPtr c) {
    c->idleSince = Clock::now();
    std::lock_guard l(mu);
    if (idle.size() < kMaxIdle) idle.push_back(std::move(c));
  }

  StatusOr<std::vector<Address>> resolve() const {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo(ep.host.c_str(), ep.port.c_str(), &hints, &res);
    if (rc != 0) return Status::unavailable("HTTP transport error: cannot resolve " + ep.host + ": " + gai_strerror(rc));
    std::vector<Address> out;
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
      Address x;
      std::memcpy(&x.addr, a->ai_addr, a->ai_addrlen);
      x.len = a->ai_addrlen;
      x.family = a->ai_family;
      out.push_back(x);
    }
    ::freeaddrinfo(res);
    if (out.empty()) return Status::unavailable("HTTP transport error: no address for " + ep.host);
    return out;
  }

  // The request's bytes on the wire: headers and body in one buffer, for one write (one TLS record
  // for a small request).
  StatusOr<std::string> serialize(const HttpRequest& rq) const {
    if (!rq.body.empty() && rq.contentType.empty()) {
      return Status::internal("HTTP request to " + rq.target + " has a body but no content type");
    }
    auto bad = [&](const std::string& why) {
      return Status::badRequest("invalid HTTP request " + rq.method + " " + rq.target + ": " + why);
    };
    if (!isToken(rq.method)) return bad("the method is not a token");
    if (!isTarget(rq.target)) return bad("the target must be a path (with an optional query), without spaces or control characters");
    if (!isFieldValue(rq.contentType)) return bad("the content type has a line break");
    bool hasAccept = false;
    size_t size = rq.method.size() + ep.basePath.size() + rq.target.size() + ep.hostHeader.size() + 160 +
                  options.userAgent.size() + config.bearerToken.size() + rq.contentType.size() + rq.body.size();
    for (const auto& [k, v] : rq.headers) {
      if (!isToken(k)) return bad("header name '" + k + "' is not a token");
      if (!isFieldValue(v)) return bad("header " + k + " has a line break");
      std::string name = lower(k);
      if (name == "host" || name == "content-length" || name == "transfer-encoding") return bad("header " + k + " is set by the client");
      if (name == "accept") hasAccept = true;
      size += k.size() + v.size() + 4;
    }
    std::string s;
    s.reserve(size);
    s.append(rq.method).append(" ").append(ep.basePath).append(rq.target).append(" HTTP/1.1\r\nHost: ");
    s.append(ep.hostHeader).append("\r\n");
    for (const auto& [k, v] : rq.headers) s.append(k).append(": ").append(v).append("\r\n");
    if (!hasAccept) s.append("Accept: application/json\r\n");
    s.append("User-Agent: ").append(options.userAgent).append("\r\n");
    if (!config.bearerToken.empty()) s.append("Authorization: Bearer ").append(config.bearerToken).append("\r\n");
    if (!rq.contentType.empty()) s.append("Content-Type: ").append(rq.contentType).append("\r\n");
    if (!rq.body.empty() || rq.method == "POST" || rq.method == "PUT" || rq.method == "PATCH") {
      s.append("Content-Length: ").append(std::to_string(rq.body.size())).append("\r\n");
    }
    s.append("\r\n").append(rq.body);
    return s;
  }

  std::vector<StatusOr<HttpResponse>> run(std::span<const HttpRequest> requests, const SendAllOptions& options);
};

namespace {

// An eventfd that a Canceller's callback may still write to after the call that made it returned.
struct EventFd {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  EventFd() = default;
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  ~EventFd() {
    if (fd >= 0) ::close(fd);
  }
};

// One call of run(): its requests, their outcomes and the slots that carry them.
class Exchange {
 public:
  Exchange(HttpPool::Impl& pool, std::span<const HttpRequest> requests, const SendAllOptions& options)
      : pool_(pool),
        requests_(requests),
        options_(options),
        out_(requests.size(), StatusOr<HttpResponse>(Status::internal("not sent"))),
        slots_(std::min(std::max<size_t>(options.maxInFlight, 1), requests.size())),
        timeout_(std::chrono::duration_cast<Clock::duration>(pool.options.requestTimeout)) {}

  std::vector<StatusOr<HttpResponse>> run() {
    if (requests_.empty()) return std::move(out_);
    std::shared_ptr<EventFd> wake;
    size_t callback = 0;
    if (options_.cancel != nullptr) {
      wake = std::make_shared<EventFd>();
      if (wake->fd < 0) {
        for (auto& o : out_) o = Status::unavailable(std::string("HTTP client error: eventfd: ") + std::strerror(errno));
        return std::move(out_);
      }
      callback = options_.cancel->addCallback([wake] {
        uint64_t one = 1;
        (void)!::write(wake->fd, &one, sizeof one);
      });
    }
    loop(wake ? wake->fd : -1);
    if (options_.cancel != nullptr) options_.cancel->removeCallback(callback);
    return std::move(out_);
  }

 private:
  enum class Step { Open, Connect, Handshake, Write, Read };

  struct Slot {
    size_t index = kNone;  // the request it carries, or none
    Step step = Step::Open;
    short events = 0;      // what it waits for in poll()
    ConnPtr conn;
    bool reused = false;   // the connection came from the idle pool
    bool fresh = false;    // open a new connection (a retry)
    bool retried = false;
    std::string out;       // the request's bytes
    size_t written = 0;
    std::unique_ptr<Parser> parser;
    std::string in;        // received, not yet parsed from inPos
    size_t inPos = 0;
    size_t received = 0;   // response bytes received
    std::vector<Address> addrs;
    size_t addr = 0;
    std::string connectError;
    Clock::time_point deadline;
  };

  void loop(int wakeFd) {
    for (auto& s : slots_) drive(s);
    std::vector<pollfd> fds;
    std::vector<Slot*> who;
    fds.reserve(slots_.size() + 1);
    who.reserve(slots_.size());
    while (done_ < out_.size()) {
      fds.clear();
      who.clear();
      auto soonest = Clock::time_point::max();
      for (auto& s : slots_) {
        if (s.index == kNone) continue;
        fds.push_back(pollfd{s.conn->fd, s.events, 0});
        who.push_back(&s);
        soonest = std::min(soonest, s.deadline);
      }
      if (who.empty()) break;  // (every request has its outcome)
      if (wakeFd >= 0) fds.push_back(pollfd{wakeFd, POLLIN, 0});
      auto wait = std::chrono::ceil<std::chrono::milliseconds>(soonest - Clock::now()).count();
      int rc = ::poll(fds.data(), fds.size(), static_cast<int>(std::clamp<int64_t>(wait, 0, INT_MAX)));
      if (rc < 0 && errno != EINTR) {
        failAll(Status::unavailable(std::string("HTTP client error: poll: ") + std::strerror(errno)));
        return;
      }
      if (wakeFd >= 0 && fds.back().revents != 0) {
        failAll(canceledStatus());
        return;
      }
      auto now = Clock::now();
      for (size_t k = 0; k < who.size(); ++k) {
        Slot& s = *who[k];
        if (fds[k].revents != 0) {
          if (!step(s)) drive(s);
        } else if (now >= s.deadline) {
          (void)end(s, Status::timeout("HTTP request timed out: no progress for " +
                                       std::to_string(pool_.options.requestTimeout.count()) + " s"));
          drive(s);
        }
      }
    }
  }

  // Keeps slot s busy: gives it requests until one has to wait, or none are left.
  void drive(Slot& s) {
    for (;;) {
      if (s.index == kNone && !pick(s)) return;
      if (step(s)) return;
    }
  }

  // Gives s the next request that is to be sent; records the outcome of those that are not.
  bool pick(Slot& s) {
    while (next_ < requests_.size()) {
      size_t i = next_++;
      const HttpRequest& rq = requests_[i];
      if (options_.cancel != nullptr && options_.cancel->cancelled()) {
        record(i, canceledStatus());
        continue;
      }
      if (options_.gate) {
        if (Status g = options_.gate(rq); !g) {
          record(i, std::move(g));
          continue;
        }
      }
      auto bytes = pool_.serialize(rq);
      if (!bytes) {
        record(i, bytes.status());
        continue;
      }
      s.index = i;
      s.out = std::move(*bytes);
      s.retried = false;
      s.fresh = false;
      restart(s);
      return true;
    }
    return false;
  }

  // (Re)starts s's request from the beginning.
  void restart(Slot& s) {
    s.step = Step::Open;
    s.conn.reset();
    s.written = 0;
    s.in.clear();
    s.inPos = 0;
    s.received = 0;
    s.parser = std::make_unique<Parser>();
    s.parser->header_limit(kHeaderLimit);
    s.parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    s.parser->eager(true);
    if (requests_[s.index].method == "HEAD") s.parser->skip(true);
    progress(s);
  }

  void progress(Slot& s) { s.deadline = Clock::now() + timeout_; }

  void record(size_t i, StatusOr<HttpResponse> r) {
    out_[i] = std::move(r);
    ++done_;
  }

  // Ends s's request with `r`; the slot is free again. Returns false (for step()'s callers).
  bool end(Slot& s, StatusOr<HttpResponse> r) {
    record(s.index, std::move(r));
    s.index = kNone;
    s.conn.reset();
    s.parser.reset();
    s.addrs.clear();
    s.events = 0;
    return false;
  }

  void failAll(const Status& st) {
    for (auto& s : slots_) {
      if (s.index != kNone) (void)end(s, st);
    }
    while (next_ < requests_.size()) record(next_++, st);
  }

  // A transport failure: sends the request again on a new connection when that is safe (see
  // http_pool.h), else ends it with 503. Returns true when the request was restarted.
  bool failed(Slot& s, const std::string& why) {
    bool safe = isIdempotent(requests_[s.index].method) || s.written < s.out.size();
    if (s.reused && s.received == 0 && !s.retried && safe) {
      s.retried = true;
      s.fresh = true;
      restart(s);
      return true;
    }
    (void)end(s, Status::unavailable("HTTP transport error: " + why));
    return false;
  }

  std::string peer() const { return pool_.ep.host + ":" + pool_.ep.port; }

  // Runs s's request as far as it goes without blocking. True: waiting for s.events. False: the
  // request has ended (its outcome is recorded) and the slot is free.
  bool step(Slot& s) {
    std::string err;
    for (;;) {
      switch (s.step) {
        case Step::Open: {
          if (!s.fresh) {
            if ((s.conn = pool_.takeIdle())) {
              s.reused = true;
              s.step = Step::Write;
              continue;
            }
          }
          s.reused = false;
          auto addrs = pool_.resolve();
          if (!addrs) return end(s, addrs.status());
          s.addrs = std::move(*addrs);
          s.addr = 0;
          s.connectError.clear();
          s.step = Step::Connect;
          continue;
        }
        case Step::Connect: {
          if (s.conn) {  // a connect in progress, and poll() said it is done
            int soErr = 0;
            socklen_t len = sizeof soErr;
            if (::getsockopt(s.conn->fd, SOL_SOCKET, SO_ERROR, &soErr, &len) != 0) soErr = errno;
            if (soErr == 0) {
              if (!connected(s)) return false;
              continue;
            }
            s.connectError = std::strerror(soErr);
            s.conn.reset();
            ++s.addr;
          }
          if (s.addr >= s.addrs.size()) {
            return end(s, Status::unavailable("HTTP transport error: cannot connect to " + peer() + ": " + s.connectError));
          }
          const Address& a = s.addrs[s.addr];
          auto c = std::make_unique<Conn>();
          c->fd = ::socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
          if (c->fd < 0) return end(s, Status::unavailable(std::string("HTTP client error: socket: ") + std::strerror(errno)));
          int one = 1;
          (void)::setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          s.conn = std::move(c);
          if (::connect(s.conn->fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0) {
            if (!connected(s)) return false;
            continue;
          }
          if (errno == EINPROGRESS) {
            s.events = POLLOUT;
            return true;
          }
          s.connectError = std::strerror(errno);
          s.conn.reset();
          ++s.addr;
          continue;
        }
        case Step::Handshake: {
          ERR_clear_error();
          errno = 0;
          int rc = SSL_do_handshake(s.conn->ssl);
          if (rc == 1) {
            progress(s);
            s.step = Step::Write;
            continue;
          }
          Io io = sslOutcome(s.conn->ssl, rc, err);
          if (isWait(io)) return waitFor(s, io);
          long verify = SSL_get_verify_result(s.conn->ssl);
          std::string why = verify != X509_V_OK ? std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify)
                            : io == Io::Eof    ? std::string("the server closed the connection")
                                               : err;
          return end(s, Status::unavailable("HTTP transport error: TLS handshake with " + peer() + ": " + why));
        }
        case Step::Write: {
          Io io = sendRest(s, err);
          if (io == Io::Ok) {
            s.step = Step::Read;
            s.events = POLLIN;
            return true;  // (the answer cannot be there yet)
          }
          if (isWait(io)) return waitFor(s, io);
          // A server may answer before it has read the whole request (413 for a body over its
          // limit) and close: its answer is a better outcome than the broken write.
          Io readIo = Io::Ok;
          std::string readErr;
          if (receive(s, readIo, readErr)) return complete(s, /*reusable=*/false);
          if (failed(s, "writing to " + peer() + ": " + (io == Io::Eof ? "connection closed" : err))) continue;
          return false;
        }
        case Step::Read: {
          boost::beast::error_code ec;
          Io io = Io::Ok;
          if (receive(s, io, err, &ec)) return complete(s);
          if (ec) return end(s, Status::unavailable("HTTP transport error: bad response from " + peer() + ": " + ec.message()));
          if (isWait(io)) return waitFor(s, io);
          std::string why = io == Io::Eof ? (s.received == 0 ? "the server closed the connection before answering"
                                                             : "the server closed the connection in the middle of the response")
                                          : "reading from " + peer() + ": " + err;
          if (failed(s, why)) continue;  // restarted
          return false;
        }
      }
    }
  }

  static bool isWait(Io io) { return io == Io::WantRead || io == Io::WantWrite; }

  // s waits for what `io` (WantRead or WantWrite) asks of its socket. Returns true (for step()).
  static bool waitFor(Slot& s, Io io) {
    s.events = io == Io::WantRead ? POLLIN : POLLOUT;
    return true;
  }

  // Writes what is left of s's request. Ok once all of it is written; else why it stopped.
  Io sendRest(Slot& s, std::string& err) {
    while (s.written < s.out.size()) {
      size_t n = 0;
      Io io = writeSome(*s.conn, s.out.data() + s.written, s.out.size() - s.written, n, err);
      if (io != Io::Ok) return io;
      s.written += n;
      progress(s);
    }
    return Io::Ok;
  }

  // Reads what has arrived on s's connection into its parser. True: the response is whole (a body
  // that ends with the connection included). False: `io` says why reading stopped (WantRead or
  // WantWrite: nothing more yet; Eof; Error, with `err`), or `ec`, when given, why the bytes are
  // not HTTP.
  bool receive(Slot& s, Io& io, std::string& err, boost::beast::error_code* ec = nullptr) {
    boost::beast::error_code parseError;
    for (;;) {
      size_t old = s.in.size();
      s.in.resize(old + kReadChunk);
      size_t n = 0;
      io = readSome(*s.conn, s.in.data() + old, kReadChunk, n, err);
      s.in.resize(old + n);
      if (io != Io::Ok) {
        if (io != Io::Eof || s.received == 0) return false;
        boost::beast::error_code eofError;
        s.parser->put_eof(eofError);  // a body that ends with the connection
        return !eofError && s.parser->is_done();
      }
      s.received += n;
      progress(s);
      if (parse(s, parseError)) return true;
      if (parseError) {
        if (ec != nullptr) *ec = parseError;
        return false;
      }
    }
  }

  // The connect of s succeeded: sets TLS up (or goes straight to writing). False: s has ended.
  bool connected(Slot& s) {
    progress(s);
    if (pool_.ctx == nullptr) {
      s.step = Step::Write;
      return true;
    }
    SSL* ssl = SSL_new(pool_.ctx);
    BIO* bio = ssl != nullptr ? BIO_new(socketMethod()) : nullptr;
    if (bio == nullptr) {
      if (ssl != nullptr) SSL_free(ssl);
      return end(s, Status::unavailable("HTTP client error: " + sslErrors()));
    }
    BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(s.conn->fd)));
    SSL_set_bio(ssl, bio, bio);
    s.conn->ssl = ssl;
    SSL_set_connect_state(ssl);
    const Endpoint& ep = pool_.ep;
    if (!pool_.config.insecureSkipTlsVerify) {
      if (ep.hostIsIp) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ep.host.c_str());
      } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_set1_host(ssl, ep.host.c_str());
      }
    }
    if (!ep.hostIsIp) SSL_set_tlsext_host_name(ssl, ep.host.c_str());
    s.step = Step::Handshake;
    return true;
  }

  // Feeds what s has received to its parser. True: the response is complete. False: more is
  // needed, or `ec` says why the bytes are not HTTP.
  static bool parse(Slot& s, boost::beast::error_code& ec) {
    for (;;) {
      size_t used = s.parser->put(boost::asio::buffer(s.in.data() + s.inPos, s.in.size() - s.inPos), ec);
      s.inPos += used;
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) return false;
      if (s.parser->is_done()) return true;
      if (used == 0 || s.inPos == s.in.size()) break;
    }
    if (s.inPos == s.in.size()) {
      s.in.clear();
      s.inPos = 0;
    } else if (s.inPos > 0) {
      s.in.erase(0, s.inPos);
      s.inPos = 0;
    }
    return false;
  }

  // s's response is whole: records it and keeps the connection when the server allows.
  bool complete(Slot& s, bool reusable = true) {
    auto& msg = s.parser->get();
    HttpResponse r;
    r.status = static_cast<int>(msg.result_int());
    for (const auto& f : msg) {
      std::string_view value(f.value().data(), f.value().size());
      auto [it, added] = r.headers.emplace(lower(std::string_view(f.name_string().data(), f.name_string().size())), value);
      if (!added) it->second.append(", ").append(value);
    }
    r.body = std::move(msg.body());
    reusable = reusable && msg.keep_alive() && s.inPos == s.in.size() &&
               (s.conn->ssl == nullptr || SSL_pending(s.conn->ssl) == 0);
    if (reusable) pool_.giveBack(std::move(s.conn));
    return end(s, std::move(r));
  }

  HttpPool::Impl& pool_;
  const std::span<const HttpRequest> requests_;
  const SendAllOptions& options_;
  std::vector<StatusOr<HttpResponse>> out_;
  std::vector<Slot> slots_;
  const Clock::duration timeout_;
  size_t next_ = 0;  // the first request not yet picked
  size_t done_ = 0;  // requests with an outcome
};

// Builds the TLS client context: TLS 1.2 or later; the config's CA alone when it has one (as
// client-go), else the system's roots; the client certificate and key from memory.
StatusOr<SSL_CTX*> makeContext(const RestConfig& c) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Status::internal("TLS context: " + sslErrors());
  auto fail = [&](const std::string& what) {
    std::string why = what + ": " + sslErrors();
    SSL_CTX_free(ctx);
    return Status::invalid(why);
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);  // a close without close_notify is an end of file
#endif
  SSL_CTX_set_verify(ctx, c.insecureSkipTlsVerify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
  if (c.caPem.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) ERR_clear_error();  // no system roots: nothing verifies
  } else {
    BIO* b = BIO_new_mem_buf(c.caPem.data(), static_cast<int>(c.caPem.size()));
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    int n = 0;
    while (X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr)) {
      X509_STORE_add_cert(store, x);
      X509_free(x);
      ++n;
    }
    BIO_free(b);
    ERR_clear_error();  // the end of the PEMs
    if (n == 0) return fail("certificate authority: no PEM certificate");
  }
  if (!c.clientCertPem.empty()) {
    BIO* b = BIO_new_mem_buf(c.clientCertPem.data(), static_cast<int>(c.clientCertPem.size()));
    X509* leaf = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    bool ok = leaf != nullptr && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509_free(leaf);
    while (ok) {
      X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
      if (x == nullptr) break;
      if (SSL_CTX_add0_chain_cert(ctx, x) != 1) X509_free(x);
    }
    BIO_free(b);
    if (!ok) return fail("client certificate");
    ERR_clear_error();
    BIO* kb = BIO_new_mem_buf(c.clientKeyPem.data(), static_cast<int>(c.clientKeyPem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    ok = key != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    if (!ok) return fail("client key");
  }
  return ctx;
}

}  // namespace

std::vector<StatusOr<HttpResponse>> HttpPool::Impl::run(std::span<const HttpRequest> requests,
                                                        const SendAllOptions& options) {
  return Exchange(*this, requests, options).run();
}

HttpPool::HttpPool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpPool::~HttpPool() = default;

StatusOr<std::unique_ptr<HttpPool>> HttpPool::create(const RestConfig& config, const HttpClientOptions& options) {
  auto ep = parseServer(config.server);
  if (!ep) return ep.status();
  if (!isFieldValue(config.bearerToken) || !isFieldValue(options.userAgent)) {
    return Status::invalid("the bearer token and the user agent may not contain line breaks");
  }
  auto impl = std::make_unique<Impl>();
  impl->ep = std::move(*ep);
  impl->config = config;
  impl->options = options;
  if (impl->ep.tls) {
    auto ctx = makeContext(config);
    if (!ctx) return ctx.status();
    impl->ctx = *ctx;
  }
  return std::unique_ptr<HttpPool>(new HttpPool(std::move(impl)));
}

std::vector<StatusOr<HttpResponse>> HttpPool::run(std::span<const HttpRequest> requests, const SendAllOptions& options) {
  return impl_->run(requests, options);
}

}  // namespace kube
