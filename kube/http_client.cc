// pplx/threadpool.h still names boost::asio::io_service, which the project-wide
// BOOST_ASIO_NO_DEPRECATED hides; this file alone may see it.
#undef BOOST_ASIO_NO_DEPRECATED
#include <utility>
#include <pplx/threadpool.h>

// newHttpClient(): requests (send, sendAll) through HttpPool (http_pool.h), watches (stream)
// through cpprestsdk. The only file that sees cpprestsdk's client. Rules kept here (see the notes
// on cpprest):
//  - every pplx chain ends in a task-based continuation that turns exceptions into a Status, so
//    no exception is ever left unobserved (that aborts the process);
//  - continuations never block; only our callers' own threads wait on the final task;
//  - request bodies always carry an explicit content type.
#include "kube/http_client.h"
#include "kube/http_pool.h"

#include <cpprest/containerstream.h>
#include <cpprest/http_client.h>

#include <boost/asio/ssl.hpp>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <system_error>

namespace kube {

void Canceller::cancel() {
  std::map<size_t, std::function<void()>> cbs;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    cbs.swap(callbacks_);
  }
  for (auto& [id, cb] : cbs) cb();
}

bool Canceller::cancelled() const {
  std::lock_guard<std::mutex> l(mu_);
  return cancelled_;
}

size_t Canceller::addCallback(std::function<void()> cb) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!cancelled_) {
      callbacks_.emplace(nextId_, std::move(cb));
      return nextId_++;
    }
  }
  cb();
  return static_cast<size_t>(-1);
}

void Canceller::removeCallback(size_t id) {
  std::lock_guard<std::mutex> l(mu_);
  callbacks_.erase(id);
}

std::vector<StatusOr<HttpResponse>> HttpClient::sendAll(const std::vector<HttpRequest>& requests,
                                                        const SendAllOptions& options) {
  std::vector<StatusOr<HttpResponse>> out;
  out.reserve(requests.size());
  for (const auto& rq : requests) {
    Status admitted = options.gate ? options.gate(rq) : Status::ok();
    out.push_back(admitted ? send(rq, options.cancel) : StatusOr<HttpResponse>(admitted));
  }
  return out;
}

namespace {

namespace http = web::http;
namespace hc = web::http::client;
namespace ssl = boost::asio::ssl;

// Converts whatever a pplx task threw. Must be called inside a catch block.
Status currentExceptionToStatus(const pplx::cancellation_token& token) {
  if (token.is_canceled()) return canceledStatus();
  try {
    throw;
  } catch (const pplx::task_canceled&) {
    return canceledStatus();
  } catch (const http::http_exception& e) {
    if (e.error_code() == std::errc::timed_out) return Status::timeout(std::string("HTTP request timed out: ") + e.what());
    if (e.error_code() == std::errc::operation_canceled) return canceledStatus();
    return Status::unavailable(std::string("HTTP transport error: ") + e.what());
  } catch (const std::exception& e) {
    return Status::unavailable(std::string("HTTP client error: ") + e.what());
  } catch (...) {
    return Status::unavailable("HTTP client error: unknown exception");
  }
}

// pplx task results must be default-constructible, so StatusOr cannot travel through a chain.
struct OpenOutcome {
  Status status;
  http::http_response response;
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Links a Canceller to a pplx cancellation source for as long as this object lives.
class CancelLink {
 public:
  CancelLink(Canceller* c, const pplx::cancellation_token_source& cts) : c_(c) {
    if (c_ != nullptr) id_ = c_->addCallback([cts]() { cts.cancel(); });
  }
  ~CancelLink() {
    if (c_ != nullptr) c_->removeCallback(id_);
  }
  CancelLink(const CancelLink&) = delete;
  CancelLink& operator=(const CancelLink&) = delete;

 private:
  Canceller* c_;
  size_t id_ = 0;
};

class CppRestLineStream final : public LineStream {
 public:
  CppRestLineStream(http::http_response response, pplx::cancellation_token_source cts, Canceller* canceller)
      : response_(std::move(response)), body_(response_.body()), cts_(std::move(cts)), link_(canceller, cts_) {}
  ~CppRestLineStream() override { cts_.cancel(); }  // closes the connection if still open

  int status() const override { return response_.status_code(); }

  // Reads the body in whole chunks (what has arrived) into buf_ and cuts lines out of it.
  // cpprestsdk's own read_line costs a task continuation and a lock per byte, which made reading
  // watches the biggest CPU cost of a busy informer.
  StatusOr<bool> readLine(std::string& line) override {
    auto token = cts_.get_token();
    for (;;) {
      if (token.is_canceled()) return canceledStatus();
      size_t nl = buf_.find('\n', pos_);
      if (nl != std::string::npos) {
        size_t end = nl > pos_ && buf_[nl - 1] == '\r' ? nl - 1 : nl;
        line.assign(buf_, pos_, end - pos_);
        pos_ = nl + 1;
        if (pos_ == buf_.size()) {
          buf_.clear();
          pos_ = 0;
        }
        return true;
      }
      if (eof_ || !body_.is_valid()) {
        if (pos_ >= buf_.size()) return false;
        line.assign(buf_, pos_, std::string::npos);  // a last line without its newline
        if (!line.empty() && line.back() == '\r') line.pop_back();
        buf_.clear();
        pos_ = 0;
        return true;
      }
      if (pos_ > 0) {  // keep only the unfinished line
        buf_.erase(0, pos_);
        pos_ = 0;
      }
      if (buf_.size() > kMaxLine) return Status::unavailable("watch line longer than 64 MiB");
      try {
        auto sb = body_.streambuf();
        size_t avail = sb.in_avail();
        if (avail == 0) {
          // Nothing buffered: wait for one byte (or the end), then take whatever came with it.
          auto c = sb.bumpc().get();
          if (c == concurrency::streams::streambuf<uint8_t>::traits::eof()) {
            eof_ = true;
            continue;
          }
          buf_.push_back(static_cast<char>(c));
          avail = sb.in_avail();
        }
        if (avail > 0) {
          size_t old = buf_.size();
          buf_.resize(old + avail);
          size_t n = sb.getn(reinterpret_cast<uint8_t*>(buf_.data() + old), avail).get();
          buf_.resize(old + n);
        }
      } catch (...) {
        return currentExceptionToStatus(token);
      }
    }
  }

  void cancel() override { cts_.cancel(); }

 private:
  http::http_response response_;
  concurrency::streams::istream body_;
  pplx::cancellation_token_source cts_;
  CancelLink link_;
  static constexpr size_t kMaxLine = 64u << 20;
  std::string buf_;  // bytes read but not yet returned, from pos_
  size_t pos_ = 0;
  bool eof_ = false;
};

// Requests (send, sendAll) go through HttpPool (http_pool.h): one write per request and no
// thread hand-offs. Watches (stream) stay on cpprestsdk.
class KubeHttpClient final : public HttpClient {
 public:
  KubeHttpClient(std::unique_ptr<HttpPool> pool, std::unique_ptr<hc::http_client> streamClient, RestConfig config,
                 HttpClientOptions options)
      : pool_(std::move(pool)),
        streamClient_(std::move(streamClient)),
        config_(std::move(config)),
        options_(std::move(options)) {}

  StatusOr<HttpResponse> send(const HttpRequest& request, Canceller* cancel) override {
    SendAllOptions o;
    o.maxInFlight = 1;
    o.cancel = cancel;
    return std::move(pool_->run(std::span<const HttpRequest>(&request, 1), o).front());
  }

  std::vector<StatusOr<HttpResponse>> sendAll(const std::vector<HttpRequest>& requests,
                                              const SendAllOptions& options) override {
    return pool_->run(requests, options);
  }

  StatusOr<LineStreamPtr> stream(const HttpRequest& request, Canceller* cancel) override {
    auto rq = buildRequest(request);
    if (!rq) return rq.status();
    pplx::cancellation_token_source cts;
    auto token = cts.get_token();
    OpenOutcome out;
    {
      CancelLink link(cancel, cts);  // the stream installs its own link below
      try {
        out = streamClient_->request(*rq, token)
                  .then([token](pplx::task<http::http_response> t) {  // NOLINT(performance-unnecessary-value-param): pplx detects task-based continuations by a by-value task
                    OpenOutcome o;
                    try {
                      o.response = t.get();
                    } catch (...) {
                      o.status = currentExceptionToStatus(token);
                    }
                    return o;
                  })
                  .get();
      } catch (...) {
        return currentExceptionToStatus(token);
      }
    }
    if (!out.status) return out.status;
    auto s = std::make_unique<CppRestLineStream>(std::move(out.response), cts, cancel);
    if (cancel != nullptr && cancel->cancelled()) s->cancel();  // cancelled between the two links
    return LineStreamPtr(std::move(s));
  }

 private:
  StatusOr<http::http_request> buildRequest(const HttpRequest& in) const {
    if (!in.body.empty() && in.contentType.empty()) {
      return Status::internal("HTTP request to " + in.target + " has a body but no content type");
    }
    try {
      http::http_request rq{http::method(in.method)};
      rq.set_request_uri(web::uri(in.target));
      bool hasAccept = false;
      for (const auto& [k, v] : in.headers) {
        if (lower(k) == "accept") hasAccept = true;
        rq.headers().add(k, v);
      }
      if (!hasAccept) rq.headers().add("Accept", "application/json");
      rq.headers().add("User-Agent", options_.userAgent);
      if (!config_.bearerToken.empty()) rq.headers().add("Authorization", "Bearer " + config_.bearerToken);
      if (!in.body.empty()) rq.set_body(in.body, in.contentType);  // content type sent verbatim
      return rq;
    } catch (const std::exception& e) {
      return Status::badRequest("invalid HTTP request " + in.method + " " + in.target + ": " + e.what());
    }
  }

  const std::unique_ptr<HttpPool> pool_;
  const std::unique_ptr<hc::http_client> streamClient_;
  const RestConfig config_;
  const HttpClientOptions options_;
};

// Applies the in-memory PEMs to an SSL context; reports the first failure.
Status applyTls(ssl::context& ctx, const RestConfig& c) {
  boost::system::error_code ec;
  if (!c.caPem.empty()) {
    ctx.add_certificate_authority(boost::asio::buffer(c.caPem), ec);
    if (ec) return Status::invalid("certificate authority: " + ec.message());
  }
  if (!c.clientCertPem.empty()) {
    ctx.use_certificate_chain(boost::asio::buffer(c.clientCertPem), ec);
    if (ec) return Status::invalid("client certificate: " + ec.message());
    ctx.use_private_key(boost::asio::buffer(c.clientKeyPem), ssl::context::pem, ec);
    if (ec) return Status::invalid("client key: " + ec.message());
  }
  return Status::ok();
}

}  // namespace

StatusOr<HttpClientPtr> newHttpClient(const RestConfig& config, HttpClientOptions options) {
  if (config.server.empty()) return Status::invalid("no API server URL configured");
  bool tls = config.server.rfind("https://", 0) == 0;  // (HttpPool::create checks the URL whole)
  if (tls) {
    // Check the PEMs now: inside cpprest's callback a failure could not be reported.
    ssl::context probe(ssl::context::tls_client);
    if (Status st = applyTls(probe, config); !st) return st;
  }
  auto makeConfig = [&](std::chrono::seconds timeout) {
    hc::http_client_config cfg;
    cfg.set_timeout(timeout);
    if (tls) {
      cfg.set_validate_certificates(!config.insecureSkipTlsVerify);
      RestConfig c = config;
      cfg.set_ssl_context_callback([c](ssl::context& ctx) {
        ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
        // With a CA in the config, that CA alone is trusted, as client-go does. cpprest has just
        // loaded the system's whole CA bundle into this context (set_default_verify_paths: ~140
        // parsed certificates, held as long as the connection): drop it.
        if (!c.caPem.empty()) SSL_CTX_set_cert_store(ctx.native_handle(), X509_STORE_new());
        (void)applyTls(ctx, c);  // validated above
      });
    }
    return cfg;
  };
  auto pool = HttpPool::create(config, options);
  if (!pool) return pool.status();
  try {
    web::uri base(config.server);
    auto streamClient = std::make_unique<hc::http_client>(base, makeConfig(options.streamIdleTimeout));
    return HttpClientPtr(std::make_shared<KubeHttpClient>(std::move(*pool), std::move(streamClient), config,
                                                          std::move(options)));
  } catch (const std::exception& e) {
    return Status::invalid("cannot create HTTP client for " + config.server + ": " + e.what());
  }
}

void initHttpClientThreads(size_t threads) { crossplat::threadpool::initialize_with_threads(threads); }

void trustOnlyConfigCa(const RestConfig& config) {
  if (!config.caPem.empty()) setenv("SSL_CERT_FILE", "/dev/null", 1);
}

}  // namespace kube
