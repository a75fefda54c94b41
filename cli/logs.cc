#include "cli/logs.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <thread>
#include <vector>

#include "kube/labels.h"
#include "kube/certs.h"
#include "kube/http_client.h"
#include "kube/json.h"
#include "kube/kubeconfig.h"
#include "kube/rest_client.h"

namespace cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

const kube::ResourceRef kAllocations{"foxden.io", "v1alpha1", "allocations", "", "", ""};
const kube::ResourceRef kWorkers{"foxden.io", "v1alpha1", "workers", "", "", ""};

int fail(const std::string& msg) {
  std::cerr << "error: " << msg << "\n";
  return 1;
}

std::string kubeconfigPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("KUBECONFIG"); env != nullptr && *env != '\0') {
    // kubectl merges the list; we take the first file that exists.
    std::string list = env;
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t colon = list.find(':', pos);
      std::string p = list.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
      if (!p.empty() && ::access(p.c_str(), R_OK) == 0) return p;
      if (colon == std::string::npos) break;
      pos = colon + 1;
    }
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") + "/.kube/config";
}

// Where to reach the agent of one worker.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string sha256;
};

// A failed attempt: `retry` when following could succeed later (agent restarting, network).
struct Failure {
  std::string message;
  bool retry = false;
  int code = 0;  // the agent's HTTP status, when it answered
  bool allocationGone = false;  // the API says the allocation does not exist
};

// Frames: "<index>:<offset> <length>\n" then <length> bytes. Writes data to stdout as it comes and
// keeps `cursor` at the next byte to ask for.
class FrameReader {
 public:
  explicit FrameReader(std::string& cursor) : cursor_(cursor) {}

  bool feed(const char* p, size_t n, std::string& err) {
    while (n > 0) {
      if (remaining_ == 0) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
        size_t take = nl != nullptr ? static_cast<size_t>(nl - p) : n;
        header_.append(p, take);
        if (header_.size() > 64) {
          err = "malformed frame header from the agent";
          return false;
        }
        if (nl == nullptr) return true;
        p += take + 1;
        n -= take + 1;
        unsigned long long index = 0, offset = 0, length = 0;
        if (std::sscanf(header_.c_str(), "%llu:%llu %llu", &index, &offset, &length) != 3) {
          err = "malformed frame header from the agent: \"" + header_ + "\"";
          return false;
        }
        header_.clear();
        index_ = index;
        offset_ = offset;
        remaining_ = length;
        if (length == 0) {
          // The agent could not resume where we asked: the files in between were rotated away
          // while we were disconnected. Say so; the stream goes on from here.
          std::cerr << "foxden logs: output before " << index << ":" << offset
                    << " was rotated away before it could be read\n";
          cursor_ = std::to_string(index) + ":" + std::to_string(offset);
        }
        continue;
      }
      size_t take = std::min<size_t>(n, remaining_);
      if (std::fwrite(p, 1, take, stdout) != take) {
        err = "cannot write to stdout";
        return false;
      }
      std::fflush(stdout);
      offset_ += take;
      remaining_ -= take;
      cursor_ = std::to_string(index_) + ":" + std::to_string(offset_);
      p += take;
      n -= take;
    }
    return true;
  }

 private:
  std::string& cursor_;
  std::string header_;
  uint64_t index_ = 0, offset_ = 0, remaining_ = 0;
};

std::string statusMessage(const std::string& body, int code) {
  auto doc = kube::parseJson(body);
  std::string msg = doc ? kube::getString(*doc, {"message"}) : "";
  return msg.empty() ? "the agent answered HTTP " + std::to_string(code) : msg;
}

// One GET against the agent. Returns nullopt when the stream ended cleanly.
std::optional<Failure> fetch(const Endpoint& ep, const std::string& token, const std::string& target, std::string& cursor) {
  try {
    asio::io_context ioc;
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    // The agent's certificate is self-signed: trust exactly the one the Worker status names.
    ctx.set_verify_mode(asio::ssl::verify_peer);
    std::string pin = ep.sha256;
    ctx.set_verify_callback([pin](bool, asio::ssl::verify_context& vc) {
      X509_STORE_CTX* store = vc.native_handle();
      if (X509_STORE_CTX_get_error_depth(store) != 0) return true;  // judged by the leaf alone
      X509* cert = X509_STORE_CTX_get_current_cert(store);
      return cert != nullptr && kube::pki::sha256Hex(cert) == pin;
    });
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    auto results = resolver.resolve(ep.host, std::to_string(ep.port), ec);
    if (ec) return Failure{"cannot resolve the agent's address " + ep.host + ": " + ec.message(), true};
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(stream).connect(results, ec);
    if (ec) return Failure{"cannot connect to the agent at " + ep.host + ":" + std::to_string(ep.port) + ": " + ec.message(), true};
    stream.handshake(asio::ssl::stream_base::client, ec);
    if (ec) {
      return Failure{"TLS handshake with the agent at " + ep.host + ":" + std::to_string(ep.port) +
                         " failed (is its certificate the one the Worker status names?): " + ec.message(),
                     true};
    }
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, ep.host);
    req.set(http::field::authorization, "Bearer " + token);
    req.set(http::field::user_agent, "foxden-logs");
    http::write(stream, req, ec);
    if (ec) return Failure{"cannot send the request to the agent: " + ec.message(), true};
    beast::flat_buffer buf;
    http::response_parser<http::buffer_body> parser;
    // Not boost::none: Boost 1.74 compares Content-Length against an empty optional as "over".
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read_header(stream, buf, parser, ec);
    if (ec) return Failure{"no answer from the agent: " + ec.message(), true};
    // From here the stream may be idle for as long as the task is quiet.
    beast::get_lowest_layer(stream).expires_never();
    int code = parser.get().result_int();
    std::string errBody;
    FrameReader frames(cursor);
    std::vector<char> chunk(size_t{64} * 1024);
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      // read_some: whatever has arrived (read() would wait for the whole 64 KiB of a quiet task).
      http::read_some(stream, buf, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      size_t n = chunk.size() - parser.get().body().size;
      if (code != 200) {
        if (errBody.size() < 65536) errBody.append(chunk.data(), n);
      } else {
        std::string err;
        if (!frames.feed(chunk.data(), n, err)) return Failure{err, false};
      }
      if (ec) {
        if (code != 200) break;
        return Failure{"the connection to the agent broke: " + ec.message(), true};
      }
    }
    if (code != 200) return Failure{statusMessage(errBody, code), code == 503 || code >= 500, code};
    stream.shutdown(ec);  // the agent may already be gone; the data is what counted
    return std::nullopt;
  } catch (const std::exception& e) {
    return Failure{std::string("talking to the agent: ") + e.what(), true};
  }
}

}  // namespace

int runLogs(const LogsOptions& o) {
  if (!kube::isDnsSubdomain(o.allocation)) {
    return fail("invalid allocation name \"" + o.allocation + "\": must be a lower-case DNS-1123 subdomain");
  }
  if (!o.ns.empty() && !kube::isDnsLabel(o.ns)) return fail("invalid namespace \"" + o.ns + "\": must be a DNS-1123 label");
  if (!o.task.empty() && !kube::isDnsLabel(o.task)) return fail("invalid task name \"" + o.task + "\": must be a DNS-1123 label");
  if (o.tail && *o.tail < 0) return fail("--tail must be 0 or more, got " + std::to_string(*o.tail));
  std::string path = kubeconfigPath(o.kubeconfig);
  auto cfg = kube::loadKubeconfig(path);
  if (!cfg) return fail(cfg.status().message());
  if (cfg->bearerToken.empty()) {
    return fail("the kubeconfig " + path + " has no bearer token: the agent authenticates API tokens only");
  }
  auto http = kube::newHttpClient(*cfg);
  if (!http) return fail(http.status().message());
  kube::RestClient client(*http);
  std::string ns = o.ns.empty() ? (cfg->ns.empty() ? "default" : cfg->ns) : o.ns;

  // Allocation -> task -> worker -> endpoint; redone before every reconnect (the agent may come
  // back on another port, or the allocation may be gone).
  std::string task = o.task;
  auto resolve = [&](Endpoint& ep) -> std::optional<Failure> {
    auto alloc = client.get(kAllocations.withNamespace(ns).withName(o.allocation));
    if (!alloc) {
      if (alloc.status().code() == 404) {
        return Failure{"allocation \"" + o.allocation + "\" not found in namespace \"" + ns + "\"", false, 0, true};
      }
      return Failure{alloc.status().message(), alloc.status().code() >= 500 || alloc.status().code() == 0};
    }
    std::vector<std::string> tasks;
    if (const kube::JsonValue* ts = kube::find(*alloc, {"spec", "tasks"}); ts != nullptr && ts->IsArray()) {
      for (const auto& t : ts->GetArray()) tasks.push_back(kube::getString(t, {"name"}));
    }
    std::string names;
    for (const auto& t : tasks) names += (names.empty() ? "" : " ") + t;
    if (task.empty()) {
      if (tasks.size() != 1) {
        return Failure{"a task name must be specified for allocation " + o.allocation + ", choose one of: [" + names + "]",
                       false};
      }
      task = tasks.front();
    } else if (std::find(tasks.begin(), tasks.end(), task) == tasks.end()) {
      return Failure{"task " + task + " is not valid for allocation " + o.allocation + ", choose one of: [" + names + "]",
                     false};
    }
    std::string worker = kube::getString(*alloc, {"spec", "workerName"});
    if (worker.empty()) return Failure{"allocation " + o.allocation + " is not placed on a worker yet", false};
    auto w = client.get(kWorkers.withName(worker));
    if (!w) return Failure{"worker " + worker + ": " + w.status().message(), w.status().code() != 404};
    const kube::JsonValue* e = kube::find(*w, {"status", "agentEndpoint"});
    auto port = e != nullptr ? kube::getInt(*e, {"port"}) : std::nullopt;
    ep.sha256 = e != nullptr ? kube::getString(*e, {"certificateSHA256"}) : "";
    if (!port || *port <= 0 || *port > 65535 || ep.sha256.size() != 64) {
      return Failure{"worker " + worker + " publishes no log endpoint (status.agentEndpoint with port and "
                     "certificateSHA256): is its agent running a version with logs?",
                     false};
    }
    ep.port = static_cast<uint16_t>(*port);
    ep.host = kube::getString(*e, {"address"});
    for (const char* type : {"InternalIP", "ExternalIP", "Hostname"}) {
      if (!ep.host.empty()) break;
      if (const kube::JsonValue* as = kube::find(*w, {"status", "addresses"}); as != nullptr && as->IsArray()) {
        for (const auto& a : as->GetArray()) {
          if (kube::getString(a, {"type"}) == type) {
            ep.host = kube::getString(a, {"address"});
            break;
          }
        }
      }
    }
    if (ep.host.empty()) return Failure{"worker " + worker + " lists no address", false};
    return std::nullopt;
  };

  std::string cursor;  // the next byte to ask for, once known
  auto backoff = std::chrono::milliseconds(200);
  bool found = false;  // the allocation existed: its disappearance later ends a follow normally
  for (;;) {
    Endpoint ep;
    auto f = resolve(ep);
    if (f && found && o.follow && f->allocationGone) return 0;
    if (!f) {
      found = true;
      std::string target = "/logs/" + ns + "/" + o.allocation + "/" + task + "?frames=true";
      target += std::string("&stream=") + (o.stderrStream ? "stderr" : "stdout");
      if (!cursor.empty()) {
        target += "&from=" + cursor;
      } else if (o.tail) {
        target += "&tail=" + std::to_string(*o.tail);
      }
      if (o.follow) target += "&follow=true";
      std::string before = cursor;
      f = fetch(ep, cfg->bearerToken, target, cursor);
      if (!f && !o.follow) return 0;
      if (cursor != before) backoff = std::chrono::milliseconds(200);  // progress: start over
      if (o.follow && (!f || f->code == 404)) {
        // A clean end, or an agent that no longer knows the allocation: it is gone (done), or the
        // agent is shutting down or has not caught up with the API yet (retry).
        auto gone = client.get(kAllocations.withNamespace(ns).withName(o.allocation));
        if (!gone && gone.status().code() == 404) return 0;
        if (!f) f = Failure{"the agent ended the stream", true};
        f->retry = true;
      }
    }
    if (!o.follow || !f->retry) return fail(f->message);
    // An agent that answers 503 is up and catching up: ask again soon, without growing the delay.
    auto delay = f->code == 503 ? std::chrono::milliseconds(500) : backoff;
    std::cerr << "foxden logs: " << f->message << "; retrying in " << delay.count() << " ms\n";
    std::this_thread::sleep_for(delay);
    if (f->code != 503) backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
}

}  // namespace cli
