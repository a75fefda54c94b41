// The cpprest HttpClient over TLS: CA, client certificate and key from memory, against
// kube::startHttpServer with a throw-away CA generated here with OpenSSL.
#include "kube/http_client.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <fstream>
#include <memory>

#include "kube/http_server.h"

namespace kube {
namespace {

namespace fs = std::filesystem;

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

struct Issued {
  Key key;
  Cert cert;
};

// Issues an EC P-256 certificate for `cn`, signed by `issuer` (self-signed when null).
Issued issue(const char* cn, const Issued* issuer, bool ca, const char* san) {
  Issued out;
  out.key.reset(EVP_EC_gen("P-256"));
  REQUIRE(out.key);
  out.cert.reset(X509_new());
  X509* x = out.cert.get();
  X509_set_version(x, 2);
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24L * 3600);
  X509_set_pubkey(x, out.key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
  X509* issuerCert = issuer ? issuer->cert.get() : x;
  X509_set_issuer_name(x, X509_get_subject_name(issuerCert));
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuerCert, x, nullptr, nullptr, 0);
  auto addExt = [&](int nid, const char* value) {
    X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(e != nullptr);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
  };
  addExt(NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (ca) addExt(NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
  if (san != nullptr) addExt(NID_subject_alt_name, san);
  REQUIRE(X509_sign(x, issuer ? issuer->key.get() : out.key.get(), EVP_sha256()) > 0);
  return out;
}

std::string pem(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string s(data, static_cast<size_t>(n));
  BIO_free(b);
  return s;
}

std::string pem(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string s(data, static_cast<size_t>(n));
  BIO_free(b);
  return s;
}

struct TlsFixture {
  fs::path dir;
  Issued ca = issue("test-ca", nullptr, true, nullptr);
  Issued server = issue("apiserver", &ca, false, "IP:127.0.0.1,DNS:localhost");
  Issued client = issue("admin", &ca, false, nullptr);
  HttpServerPtr http;
  std::string lastAuth;
  std::mutex mu;
  std::atomic<int> inFlight{0};
  std::atomic<int> maxInFlight{0};

  TlsFixture() {
    std::string tmpl = (fs::temp_directory_path() / "http-client-test-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    std::ofstream(dir / "server.crt") << pem(server.cert.get());
    std::ofstream(dir / "server.key") << pem(server.key.get());
    HttpServerOptions o;
    o.certFile = (dir / "server.crt").string();
    o.keyFile = (dir / "server.key").string();
    auto s = startHttpServer(o, [this](const ServerRequest& req, ResponseWriter& w) {
      {
        std::lock_guard<std::mutex> l(mu);
        lastAuth = req.header("authorization");
      }
      if (req.path.rfind("/slow", 0) == 0) {  // counts how many requests are in here at once
        int now = ++inFlight;
        int seen = maxInFlight.load();
        while (now > seen && !maxInFlight.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        --inFlight;
        if (req.path == "/slow/missing") {
          w.respond(404, "application/json", R"({"kind":"Status","code":404})");
          return;
        }
      }
      if (req.path == "/stream") {
        if (!w.beginStream(200, "application/json")) return;
        w.write("{\"n\":1}\n{\"n\":2}\r\n");
        w.write("{\"n\":3}\n");
        return;
      }
      w.respond(200, "application/json", "{\"method\":\"" + req.method + "\",\"body\":" +
                                              (req.body.empty() ? "null" : req.body) + "}");
    });
    REQUIRE_MESSAGE(s.isOk(), s.status().toString());
    http = std::move(*s);
  }
  ~TlsFixture() {
    http->stop();
    fs::remove_all(dir);
  }
  RestConfig config() const {
    RestConfig c;
    c.server = "https://127.0.0.1:" + std::to_string(http->port());
    c.caPem = pem(ca.cert.get());
    c.clientCertPem = pem(client.cert.get());
    c.clientKeyPem = pem(client.key.get());
    c.bearerToken = "secret-token";
    return c;
  }
};

TEST_CASE("http client: TLS with CA, client cert and key from memory, bearer token") {
  TlsFixture fx;
  auto client = newHttpClient(fx.config());
  REQUIRE_MESSAGE(client.isOk(), client.status().toString());
  HttpRequest rq;
  rq.method = "PATCH";
  rq.target = "/x";
  rq.body = R"({"a":1})";
  rq.contentType = "application/merge-patch+json";
  auto r = (*client)->send(rq);
  REQUIRE_MESSAGE(r.isOk(), r.status().toString());
  CHECK(r->status == 200);
  CHECK(r->body == R"({"method":"PATCH","body":{"a":1}})");
  CHECK(r->headers["content-type"] == "application/json");
  {
    std::lock_guard<std::mutex> l(fx.mu);
    CHECK(fx.lastAuth == "Bearer secret-token");
  }

  // Streaming over TLS, with "\r\n" line ends stripped.
  HttpRequest srq;
  srq.target = "/stream";
  auto s = (*client)->stream(srq);
  REQUIRE_MESSAGE(s.isOk(), s.status().toString());
  std::vector<std::string> lines;
  std::string line;
  for (;;) {
    auto more = (*s)->readLine(line);
    REQUIRE_MESSAGE(more.isOk(), more.status().toString());
    if (!*more) break;
    lines.push_back(line);
  }
  CHECK(lines == std::vector<std::string>{R"({"n":1})", R"({"n":2})", R"({"n":3})"});

  // A body without a content type is refused before sending.
  HttpRequest noType;
  noType.method = "POST";
  noType.target = "/x";
  noType.body = "{}";
  CHECK((*client)->send(noType).status().code() == 500);
}

TEST_CASE("http client: an untrusted server certificate fails; insecureSkipTlsVerify accepts it") {
  TlsFixture fx;
  RestConfig wrongCa = fx.config();
  Issued other = issue("other-ca", nullptr, true, nullptr);
  wrongCa.caPem = pem(other.cert.get());
  auto client = newHttpClient(wrongCa);
  REQUIRE(client.isOk());
  HttpRequest rq;
  rq.target = "/x";
  auto r = (*client)->send(rq);
  CHECK_FALSE(r.isOk());
  CHECK(r.status().code() == 503);

  RestConfig insecure = wrongCa;
  insecure.insecureSkipTlsVerify = true;
  auto client2 = newHttpClient(insecure);
  REQUIRE(client2.isOk());
  auto r2 = (*client2)->send(rq);
  REQUIRE_MESSAGE(r2.isOk(), r2.status().toString());
  CHECK(r2->status == 200);
}

TEST_CASE("http client: a Canceller cancelled up front fails the request with Canceled") {
  TlsFixture fx;
  auto client = newHttpClient(fx.config());
  REQUIRE(client.isOk());
  Canceller c;
  c.cancel();
  HttpRequest rq;
  rq.target = "/x";
  auto r = (*client)->send(rq, &c);
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().code() == kCanceledCode);
  CHECK(r.status().reason() == "Canceled");
}

TEST_CASE("http client: sendAll answers every request in order, at most maxInFlight at once") {
  TlsFixture fx;
  auto client = newHttpClient(fx.config());
  REQUIRE(client.isOk());
  std::vector<HttpRequest> rqs(120);
  for (size_t i = 0; i < rqs.size(); ++i) {
    rqs[i].method = "POST";
    rqs[i].target = i % 17 == 5 ? "/slow/missing" : "/slow/" + std::to_string(i);
    rqs[i].body = "{\"i\":" + std::to_string(i) + "}";
    rqs[i].contentType = "application/json";
  }
  rqs[7].contentType.clear();  // malformed: refused before sending, the others go on
  SendAllOptions o;
  o.maxInFlight = 6;
  std::vector<std::string> asked;
  std::mutex askedMu;
  o.gate = [&](const HttpRequest& r) {
    std::lock_guard l(askedMu);
    asked.push_back(r.target);
    if (r.target == "/slow/40") return Status::unavailable("refused by the gate");
    return Status::ok();
  };
  auto out = (*client)->sendAll(rqs, o);
  REQUIRE(out.size() == rqs.size());
  CHECK(asked.size() == rqs.size());
  for (size_t i = 0; i < out.size(); ++i) {
    CAPTURE(i);
    if (i == 7) {
      CHECK(out[i].status().code() == 500);
    } else if (i == 40) {
      CHECK(out[i].status().message() == "refused by the gate");
    } else if (i % 17 == 5) {
      REQUIRE(out[i].isOk());
      CHECK(out[i]->status == 404);  // an HTTP error status is a response, as with send()
    } else {
      REQUIRE_MESSAGE(out[i].isOk(), out[i].status().toString());
      CHECK(out[i]->status == 200);
      CHECK(out[i]->body == R"({"method":"POST","body":{"i":)" + std::to_string(i) + "}}");
    }
  }
  CHECK(fx.maxInFlight.load() <= 6);

  // Nothing at all, and a batch cancelled up front: every request ends Canceled, none is sent.
  CHECK((*client)->sendAll({}, {}).empty());
  fx.maxInFlight = 0;
  Canceller c;
  c.cancel();
  SendAllOptions cancelled;
  cancelled.cancel = &c;
  auto none = (*client)->sendAll(std::vector<HttpRequest>(rqs.begin(), rqs.begin() + 10), cancelled);
  REQUIRE(none.size() == 10);
  for (const auto& r : none) CHECK(r.status().reason() == "Canceled");
  CHECK(fx.maxInFlight.load() == 0);
}

}  // namespace
}  // namespace kube
namespace kube {
namespace {

// The server answers 413 after reading its limit of the body, and closes with the rest unread; the
// client's write then fails (connection reset), but the answer had arrived and is what comes back.
TEST_CASE("http client: a body over the server's limit comes back as its 413, not as a broken write") {
  TlsFixture fx;
  auto client = newHttpClient(fx.config());
  REQUIRE(client.isOk());
  for (size_t mb : {4, 32}) {
    CAPTURE(mb);
    HttpRequest rq;
    rq.method = "POST";
    rq.target = "/x";
    rq.body = "\"" + std::string(mb << 20, 'a') + "\"";
    rq.contentType = "application/json";
    auto r = (*client)->send(rq);
    REQUIRE_MESSAGE(r.isOk(), r.status().toString());
    CHECK(r->status == 413);
    CHECK(r->body.find("RequestEntityTooLarge") != std::string::npos);
  }
  HttpRequest small;
  small.target = "/x";
  auto after = (*client)->send(small);
  REQUIRE_MESSAGE(after.isOk(), after.status().toString());
  CHECK(after->status == 200);
}

}  // namespace
}  // namespace kube
