// apiserver_bench: end-to-end figures for `foxden server`, measured over real HTTPS against a real
// server process this program starts (fresh data dir, free port) and stops.
//
//   1. create / update latency at a paced write rate (open loop, one keep-alive connection);
//   2. full and paged LIST of N ConfigMaps: time and bytes;
//   3. watch fan-out: W watchers, delivery latency, and every event exactly once, in order;
//   4. server RSS at 1,000 and N stored objects, and after a full LIST.
//
// Benchmarks print figures and never fail on speed; the exit status is non-zero only when a
// correctness check fails (non-2xx answer, wrong list contents, missing/duplicate/reordered watch
// events) or the server cannot be started.
//
// Each phase gets its own server process so one phase's leftovers (objects, watch history, heap
// growth) do not colour another's figures.
//
// Usage: apiserver_bench [--foxden PATH] [--crds DIR] [--writes N] [--objects N] [--watchers N]
//                        [--watch-writes N] [--rate W/S] [--object-bytes B] [--list-repeats N]
//                        [--data-root DIR] [--keep] [--quick] [--phases latency,store,watch]

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <rapidjson/document.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

double msBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// ---------------------------------------------------------------------------------------------
// Options and bookkeeping

struct Options {
  std::string foxden;
  std::string crds;
  int writes = 2000;
  int objects = 10000;
  int watchers = 100;
  int watchWrites = 200;
  double rate = 200;
  int objectBytes = 300;
  int listRepeats = 5;
  std::string dataRoot;
  bool keep = false;
  bool quick = false;
  std::set<std::string> phases = {"latency", "store", "watch"};
};

// Correctness failures are counted, reported, and turned into the exit status at the end, so one
// bad phase does not hide the figures of the others.
std::atomic<int> gFailures{0};

void failure(const std::string& what) {
  ++gFailures;
  std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

// The server's pid, for the watchdog and for abnormal exits: a hung phase must not leave a server
// running behind us.
std::atomic<pid_t> gServerPid{0};

// A benchmark that hangs is worse than one that fails: each phase arms a generous deadline.
class Watchdog {
 public:
  Watchdog() : thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard l(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void arm(const std::string& phase, int seconds) {
    std::lock_guard l(mu_);
    phase_ = phase;
    deadline_ = Clock::now() + std::chrono::seconds(seconds);
    cv_.notify_all();
  }

 private:
  void run() {
    std::unique_lock l(mu_);
    while (!stopping_) {
      cv_.wait_for(l, std::chrono::milliseconds(500));
      if (deadline_ && Clock::now() > *deadline_) {
        std::fprintf(stderr, "FAIL: phase \"%s\" did not finish in time; killing the server\n",
                     phase_.c_str());
        if (pid_t p = gServerPid.load(); p > 0) ::kill(p, SIGKILL);
        std::_Exit(3);
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::string phase_;
  std::optional<Clock::time_point> deadline_;
  std::thread thread_;
};

struct Summary {
  size_t n = 0;
  double min = NAN, p50 = NAN, p90 = NAN, p99 = NAN, p999 = NAN, max = NAN, mean = NAN;
};

// Nearest-rank percentiles: every reported figure is a latency that was actually observed.
Summary summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
  };
  s.min = v.front();
  s.p50 = pct(50);
  s.p90 = pct(90);
  s.p99 = pct(99);
  s.p999 = pct(99.9);
  s.max = v.back();
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  return s;
}

void printSummaryHeader() {
  std::printf("    %-34s %7s %8s %8s %8s %8s %8s %8s\n", "(ms)", "n", "p50", "p90", "p99",
              "p99.9", "max", "mean");
}

void printSummary(const char* label, const Summary& s) {
  std::printf("    %-34s %7zu %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", label, s.n, s.p50, s.p90,
              s.p99, s.p999, s.max, s.mean);
}

std::string readFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

std::string loadAverage() {
  std::string l = readFile("/proc/loadavg");
  std::istringstream in(l);
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// ---------------------------------------------------------------------------------------------
// The server process

struct ProcStatus {
  long rssKiB = -1;
  long hwmKiB = -1;
  long threads = -1;
};

ProcStatus procStatus(pid_t pid) {
  ProcStatus s;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    auto value = [&](const char* key) -> long {
      return std::strtol(line.c_str() + std::strlen(key), nullptr, 10);
    };
    if (line.rfind("VmRSS:", 0) == 0) s.rssKiB = value("VmRSS:");
    if (line.rfind("VmHWM:", 0) == 0) s.hwmKiB = value("VmHWM:");
    if (line.rfind("Threads:", 0) == 0) s.threads = value("Threads:");
  }
  return s;
}

// Server CPU time, total and per thread, from /proc/PID/task/*/stat (utime + stime). Per-write CPU
// shows work that latency alone hides: background threads that burn a core between requests.
struct CpuTimes {
  double totalMs = 0;
  std::map<long, double> byThreadMs;  // tid -> ms
};

CpuTimes cpuTimes(pid_t pid) {
  CpuTimes t;
  static const double msPerTick = 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::string stat = readFile(e.path().string() + "/stat");
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream in(stat.substr(paren + 2));
    std::string field;
    double ticks = 0;
    // After "pid (comm) ", field 3 (state) comes first; utime and stime are fields 14 and 15.
    for (int i = 3; i <= 15 && (in >> field); ++i) {
      if (i == 14 || i == 15) ticks += std::atof(field.c_str());
    }
    double ms = ticks * msPerTick;
    t.byThreadMs[std::atol(e.path().filename().c_str())] = ms;
    t.totalMs += ms;
  }
  return t;
}

// "X ms CPU per op, busiest thread Y ms per op (thread k of n by start order)". Threads are
// unnamed; start order identifies them (in `foxden server`: main, acceptor, reaper, GC, then one
// per connection).
std::string cpuPerOp(const CpuTimes& before, const CpuTimes& after, int ops, double wallS) {
  double total = after.totalMs - before.totalMs;
  long busiest = -1;
  double busiestMs = -1;
  for (const auto& [tid, ms] : after.byThreadMs) {
    auto it = before.byThreadMs.find(tid);
    double d = ms - (it == before.byThreadMs.end() ? 0 : it->second);
    if (d > busiestMs) {
      busiestMs = d;
      busiest = tid;
    }
  }
  size_t rank = 1;
  for (const auto& [tid, ms] : after.byThreadMs) {
    if (tid == busiest) break;
    ++rank;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "server CPU %.2f ms per op (%.0f%% of one core); busiest thread %.2f ms per op (thread %zu of %zu by start order)",
                total / ops, total / (wallS * 10.0), busiestMs / ops, rank, after.byThreadMs.size());
  return buf;
}

class ServerProcess {
 public:
  ServerProcess(const Options& o, const std::string& label) : opts_(o) {
    std::string tmpl = o.dataRoot + "/foxden-bench-" + label + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
    dir_ = buf.data();
    start();
  }
  ~ServerProcess() {
    stop();
    if (!opts_.keep) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& token() const { return token_; }
  double startupMs() const { return startupMs_; }
  ProcStatus status() const { return procStatus(pid_); }

  // Stops the server and checks how it ended: a server that died on its own (crash, abort) or
  // failed its clean shutdown is a correctness failure, reported with the tail of its log.
  void stop() {
    if (pid_ <= 0) return;
    int st = 0;
    bool diedEarly = ::waitpid(pid_, &st, WNOHANG) == pid_;
    bool killed = false;
    if (!diedEarly) {
      ::kill(pid_, SIGTERM);
      // A clean shutdown first (the server closes watchers and SQLite); SIGKILL if it hangs.
      auto deadline = Clock::now() + std::chrono::seconds(10);
      while (::waitpid(pid_, &st, WNOHANG) == 0) {
        if (Clock::now() > deadline) {
          ::kill(pid_, SIGKILL);
          ::waitpid(pid_, &st, 0);
          killed = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    std::string how = WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st))
                                      : "exit status " + std::to_string(WEXITSTATUS(st));
    if (diedEarly || killed || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::string log = readFile(dir_ + "/server.log");
      if (log.size() > 2000) log = "..." + log.substr(log.size() - 2000);
      failure("foxden server " + std::to_string(pid_) + (diedEarly ? " died before the benchmark stopped it (" : killed ? " ignored SIGTERM for 10 s (" : " ended badly (") +
              how + "); log " + dir_ + "/server.log:\n" + log);
    }
    gServerPid = 0;
    pid_ = -1;
  }

 private:
  void start() {
    std::string log = dir_ + "/server.log";
    std::string data = dir_ + "/data";
    std::vector<std::string> args = {opts_.foxden, "server", "--data-dir", data, "--listen", "127.0.0.1:0"};
    if (!opts_.crds.empty()) {
      args.push_back("--crds");
      args.push_back(opts_.crds);
    }
    auto t0 = Clock::now();
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      // The server must not outlive the benchmark, even if the benchmark is killed.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
        ::close(fd);
      }
      // Only stdio goes to the server: descriptors this process inherited must not keep pipes open.
      ::close_range(3, ~0U, 0);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
      std::_Exit(127);
    }
    pid_ = pid;
    gServerPid = pid;
    // --listen 127.0.0.1:0 lets the kernel choose a free port (no probe-then-bind race); the
    // server announces it on stderr once it is serving, which is also our readiness signal.
    const std::string marker = "serving the Kubernetes API on https://";
    auto deadline = Clock::now() + std::chrono::seconds(60);
    for (;;) {
      std::string text = readFile(log);
      if (auto at = text.find(marker); at != std::string::npos) {
        size_t end = text.find_first_of(" \n", at + marker.size());
        std::string hostPort = text.substr(at + marker.size(), end - at - marker.size());
        port_ = static_cast<uint16_t>(std::stoi(hostPort.substr(hostPort.rfind(':') + 1)));
        break;
      }
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        gServerPid = 0;
        throw std::runtime_error("foxden server exited during start-up; its log:\n" + text);
      }
      if (Clock::now() > deadline) throw std::runtime_error("foxden server not ready after 60 s; its log:\n" + text);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    startupMs_ = msBetween(t0, Clock::now());
    token_ = trim(readFile(data + "/admin.token"));
    if (token_.empty()) throw std::runtime_error("no admin token in " + data + "/admin.token");
    dir_data_ = data;
  }

  const Options& opts_;
  std::string dir_;
  std::string dir_data_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string token_;
  double startupMs_ = 0;

 public:
  std::string caPath() const { return dir_data_ + "/pki/ca.crt"; }
};

// ---------------------------------------------------------------------------------------------
// HTTPS client: Beast over Asio SSL, blocking, one keep-alive connection per client.

struct Response {
  int status = 0;
  std::string body;
};

// The server's CA and admin token, shared by every connection to one server.
class Endpoint {
 public:
  explicit Endpoint(const ServerProcess& s)
      : port_(s.port()), token_(s.token()), ctx_(ssl::context::tls_client) {
    ctx_.load_verify_file(s.caPath());
    ctx_.set_verify_mode(ssl::verify_peer);
  }
  uint16_t port() const { return port_; }
  const std::string& token() const { return token_; }
  ssl::context& ctx() { return ctx_; }
  static constexpr const char* kHost = "127.0.0.1";

 private:
  uint16_t port_;
  std::string token_;
  ssl::context ctx_;
};

using TlsStream = ssl::stream<tcp::socket>;

// Connects and completes a verified TLS handshake (server certificate must chain to the data
// dir's CA and name 127.0.0.1).
std::unique_ptr<TlsStream> connectTls(asio::io_context& ioc, Endpoint& ep) {
  auto s = std::make_unique<TlsStream>(ioc, ep.ctx());
  s->next_layer().connect(tcp::endpoint(asio::ip::make_address(Endpoint::kHost), ep.port()));
  s->next_layer().set_option(tcp::no_delay(true));
  s->set_verify_mode(ssl::verify_peer);
  s->set_verify_callback(ssl::host_name_verification(Endpoint::kHost));
  s->handshake(ssl::stream_base::client);
  return s;
}

http::request<http::string_body> makeRequest(Endpoint& ep, http::verb verb, const std::string& target,
                                             const std::string& body) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, std::string(Endpoint::kHost) + ":" + std::to_string(ep.port()));
  req.set(http::field::authorization, "Bearer " + ep.token());
  req.set(http::field::user_agent, "apiserver-bench/1.0");
  req.set(http::field::accept, "application/json");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.keep_alive(true);
  req.prepare_payload();
  return req;
}

class HttpsClient {
 public:
  explicit HttpsClient(Endpoint& ep) : ep_(ep) {}

  Response request(http::verb verb, const std::string& target, const std::string& body = {}) {
    if (!stream_) {
      stream_ = connectTls(ioc_, ep_);
      connectedAt_ = Clock::now();
      requests_ = 0;
    }
    ++requests_;
    auto req = makeRequest(ep_, verb, target, body);
    beast::error_code ec;
    http::write(*stream_, req, ec);
    if (ec) return drop("write " + target + ": " + ec.message(), false);
    http::response_parser<http::string_body> parser;
    parser.body_limit(boost::none);  // a full LIST of 10,000 objects is several MB
    http::read(*stream_, buf_, parser, ec);
    if (ec) return drop("read " + target + ": " + ec.message(), parser.is_header_done());
    auto& res = parser.get();
    Response out{static_cast<int>(res.result_int()), std::move(res.body())};
    if (!res.keep_alive()) {
      stream_.reset();
      buf_.clear();
    }
    return out;
  }

 private:
  // A broken connection is a correctness failure of the exchange, not something to retry: a
  // retried POST could be applied twice.
  // The message says where in the connection's life it broke, to tell server-side closes apart.
  Response drop(const std::string& why, bool gotHeader) {
    char ctx[160];
    std::snprintf(ctx, sizeof ctx, " (request %d on a connection %.1f s old; response header %s)", requests_,
                  std::chrono::duration<double>(Clock::now() - connectedAt_).count(),
                  gotHeader ? "received" : "not received");
    stream_.reset();
    buf_.clear();
    throw std::runtime_error(why + ctx);
  }
  Endpoint& ep_;
  Clock::time_point connectedAt_;
  int requests_ = 0;
  asio::io_context ioc_;
  std::unique_ptr<TlsStream> stream_;
  beast::flat_buffer buf_;
};

bool is2xx(int status) { return status >= 200 && status < 300; }

// Fails loudly on a non-2xx answer, with the server's Status message.
void expect2xx(const Response& r, const std::string& what) {
  if (!is2xx(r.status)) failure(what + ": HTTP " + std::to_string(r.status) + ": " + r.body.substr(0, 300));
}

std::string resourceVersionOf(const std::string& objectJson) {
  rapidjson::Document d;
  d.Parse(objectJson.data(), objectJson.size());
  if (d.HasParseError() || !d.IsObject()) return {};
  auto md = d.FindMember("metadata");
  if (md == d.MemberEnd() || !md->value.IsObject()) return {};
  auto rv = md->value.FindMember("resourceVersion");
  if (rv == md->value.MemberEnd() || !rv->value.IsString()) return {};
  return rv->value.GetString();
}

// ---------------------------------------------------------------------------------------------
// Objects

// A ConfigMap whose JSON request body is about `bytes` long: a fixed envelope plus a data value
// padded to size. `version` changes the payload so an update really changes the object.
std::string configMapJson(const std::string& name, int bytes, int version, const std::string& rv = {}) {
  std::string head = R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":")" + name +
                     R"(","labels":{"app":"apiserver-bench"})";
  if (!rv.empty()) head += R"(,"resourceVersion":")" + rv + "\"";
  head += R"(},"data":{"payload":")";
  const std::string tail = "\"}}";
  int pad = std::max(8, bytes - static_cast<int>(head.size() + tail.size()));
  std::string filler(static_cast<size_t>(pad), static_cast<char>('a' + version % 26));
  return head + filler + tail;
}

std::string objectName(const char* prefix, int i) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%06d", prefix, i);
  return buf;
}

std::string collection(const std::string& ns) { return "/api/v1/namespaces/" + ns + "/configmaps"; }

void ensureNamespace(HttpsClient& c, const std::string& ns) {
  auto r = c.request(http::verb::post, "/api/v1/namespaces",
                     R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":")" + ns + "\"}}");
  if (r.status != 409) expect2xx(r, "create namespace " + ns);
}

// ---------------------------------------------------------------------------------------------
// The durability floor: what one SQLite commit costs on this disk right now, with the server's
// settings (WAL, synchronous=FULL) and the shape of its write (upsert one object, bump the
// revision). No write the server acknowledges can be faster; on a shared machine this moves a lot
// between runs, so it is measured next to the figures it explains.

Summary sqliteCommitProbe(const std::string& root, int commits, double ratePerS) {
  std::string dir = root + "/foxden-bench-sqlite-XXXXXX";
  std::vector<char> buf(dir.begin(), dir.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp " + dir);
  dir = buf.data();
  std::string path = dir + "/probe.db";
  sqlite3* db = nullptr;
  std::vector<double> ms;
  auto exec = [&](const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("sqlite probe: ") + sqlite3_errmsg(db) + " in " + sql);
    }
  };
  try {
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("sqlite probe: cannot open " + path);
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    exec("CREATE TABLE objects (key TEXT PRIMARY KEY, rv INTEGER NOT NULL, value BLOB NOT NULL) WITHOUT ROWID");
    exec("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)");
    exec("INSERT INTO meta(name, value) VALUES ('rv', 0)");
    sqlite3_stmt* up = nullptr;
    sqlite3_stmt* rv = nullptr;
    sqlite3_prepare_v2(db, "INSERT INTO objects(key, rv, value) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO UPDATE SET rv = excluded.rv, value = excluded.value", -1, &up, nullptr);
    sqlite3_prepare_v2(db, "UPDATE meta SET value = ?1 WHERE name = 'rv'", -1, &rv, nullptr);
    std::string value(600, 'x');
    // Paced like the server's write test: a virtual disk's flush budget behaves differently under
    // a steady 200/s than under a back-to-back burst.
    auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / ratePerS));
    auto start = Clock::now();
    for (int i = 0; i < commits; ++i) {
      std::string key = "core/configmaps/default/" + objectName("probe", i);
      std::this_thread::sleep_until(start + interval * i);
      auto t0 = Clock::now();
      exec("BEGIN IMMEDIATE");
      sqlite3_bind_text(up, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
      sqlite3_bind_int64(up, 2, i + 1);
      sqlite3_bind_blob(up, 3, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
      sqlite3_step(up);
      sqlite3_reset(up);
      sqlite3_bind_int64(rv, 1, i + 1);
      sqlite3_step(rv);
      sqlite3_reset(rv);
      exec("COMMIT");
      ms.push_back(msBetween(t0, Clock::now()));
    }
    sqlite3_finalize(up);
    sqlite3_finalize(rv);
  } catch (...) {
    sqlite3_close(db);
    std::error_code ec;
    fs::remove_all(dir, ec);
    throw;
  }
  sqlite3_close(db);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return summarize(ms);
}

// ---------------------------------------------------------------------------------------------
// Phase 1: paced write latency

struct PacedResult {
  std::vector<double> latencyMs;  // scheduled send time -> response received
  std::vector<double> serviceMs;  // actual send time -> response received
  int lateSends = 0;              // sends that left more than one interval after their slot
  double elapsedS = 0;
  size_t requestBytes = 0;
  size_t responseBytes = 0;
};

// Open-loop pacing: request i is due at start + i * interval whatever happened before. A slow
// answer delays the next send, and that delay is counted in the next request's latency (measured
// from its due time), so stalls are not hidden by the client waiting politely (coordinated
// omission).
PacedResult pacedWrites(HttpsClient& c, int count, double ratePerS,
                        const std::function<std::pair<http::verb, std::pair<std::string, std::string>>(int)>& make,
                        const std::function<void(int, const Response&, Clock::time_point sent, Clock::time_point done)>& onDone) {
  PacedResult r;
  auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / ratePerS));
  auto start = Clock::now() + std::chrono::milliseconds(20);
  for (int i = 0; i < count; ++i) {
    auto due = start + interval * i;
    // Built before waiting for the slot, so the client's own work is outside the figures (and a
    // request may depend on an earlier answer, e.g. an update's resourceVersion).
    auto [verb, tb] = make(i);
    if (Clock::now() < due) std::this_thread::sleep_until(due);
    auto sent = Clock::now();
    if (sent - due > interval) ++r.lateSends;
    Response res = c.request(verb, tb.first, tb.second);
    auto done = Clock::now();
    r.latencyMs.push_back(msBetween(due, done));
    r.serviceMs.push_back(msBetween(sent, done));
    r.requestBytes += tb.second.size();
    r.responseBytes += res.body.size();
    onDone(i, res, sent, done);
  }
  r.elapsedS = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

struct LatencyFigures {
  Summary create, update;
  double storedObjectBytes = 0;
};

// Creates `writes` ConfigMaps, then updates each once (PUT with its resourceVersion), paced.
LatencyFigures latencyPhase(const Options& o, Endpoint& ep, pid_t serverPid, const std::string& ns, const char* namePrefix) {
  HttpsClient c(ep);
  // Warm-up (TLS session, allocator, first-use paths), excluded from the figures.
  for (int i = 0; i < 20; ++i) expect2xx(c.request(http::verb::get, collection(ns) + "?limit=1"), "warm-up list");

  std::vector<std::string> rvs(static_cast<size_t>(o.writes));
  int bad = 0;
  CpuTimes cpu0 = cpuTimes(serverPid);
  auto created = pacedWrites(
      c, o.writes, o.rate,
      [&](int i) {
        return std::make_pair(http::verb::post, std::make_pair(collection(ns), configMapJson(objectName(namePrefix, i), o.objectBytes, 0)));
      },
      [&](int i, const Response& r, Clock::time_point, Clock::time_point) {
        if (!is2xx(r.status)) {
          if (bad++ < 5) expect2xx(r, "create " + objectName(namePrefix, i));
          else ++gFailures;
          return;
        }
        rvs[static_cast<size_t>(i)] = resourceVersionOf(r.body);
      });
  CpuTimes cpu1 = cpuTimes(serverPid);
  auto updated = pacedWrites(
      c, o.writes, o.rate,
      [&](int i) {
        std::string name = objectName(namePrefix, i);
        return std::make_pair(http::verb::put, std::make_pair(collection(ns) + "/" + name,
                                                              configMapJson(name, o.objectBytes, 1, rvs[static_cast<size_t>(i)])));
      },
      [&](int i, const Response& r, Clock::time_point, Clock::time_point) {
        if (!is2xx(r.status)) {
          if (bad++ < 5) expect2xx(r, "update " + objectName(namePrefix, i));
          else ++gFailures;
        }
      });
  CpuTimes cpu2 = cpuTimes(serverPid);

  double interval = 1000.0 / o.rate;
  std::printf("    %d creates then %d updates (PUT with resourceVersion), due every %.2f ms (%.0f writes/s),\n"
              "    one keep-alive HTTPS connection; request body %zu B, stored object (create answer) %.0f B\n",
              o.writes, o.writes, interval, o.rate, created.requestBytes / std::max<size_t>(1, static_cast<size_t>(o.writes)),
              static_cast<double>(created.responseBytes) / std::max(1, o.writes));
  printSummaryHeader();
  LatencyFigures f;
  f.create = summarize(created.latencyMs);
  f.update = summarize(updated.latencyMs);
  f.storedObjectBytes = static_cast<double>(created.responseBytes) / std::max(1, o.writes);
  printSummary("create, due -> response", f.create);
  printSummary("create, sent -> response (service)", summarize(created.serviceMs));
  printSummary("update, due -> response", f.update);
  printSummary("update, sent -> response (service)", summarize(updated.serviceMs));
  std::printf("    achieved rate: create %.1f/s, update %.1f/s; sends late by more than one interval: %d, %d\n",
              o.writes / created.elapsedS, o.writes / updated.elapsedS, created.lateSends, updated.lateSends);
  std::printf("    creates: %s\n", cpuPerOp(cpu0, cpu1, o.writes, created.elapsedS).c_str());
  std::printf("    updates: %s\n", cpuPerOp(cpu1, cpu2, o.writes, updated.elapsedS).c_str());
  return f;
}

// ---------------------------------------------------------------------------------------------
// Phases 2 and 4: bulk load, LIST, RSS

struct ListFigures {
  std::vector<double> fullMs;
  std::vector<double> pagedMs;
  size_t fullBytes = 0;
  size_t pagedBytes = 0;
  int pages = 0;
};

// Counts the items of a List body and checks their names are unique; returns -1 if unparsable.
long countItems(const std::string& body, std::set<std::string>* names, std::string* cont) {
  rapidjson::Document d;
  d.Parse(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject()) return -1;
  auto items = d.FindMember("items");
  if (items == d.MemberEnd() || !items->value.IsArray()) return -1;
  if (cont != nullptr) {
    cont->clear();
    auto md = d.FindMember("metadata");
    if (md != d.MemberEnd() && md->value.IsObject()) {
      auto c = md->value.FindMember("continue");
      if (c != md->value.MemberEnd() && c->value.IsString()) *cont = c->value.GetString();
    }
  }
  long n = 0;
  for (auto& it : items->value.GetArray()) {
    ++n;
    if (names == nullptr) continue;
    auto md = it.FindMember("metadata");
    if (md == it.MemberEnd()) continue;
    auto nm = md->value.FindMember("name");
    if (nm != md->value.MemberEnd() && nm->value.IsString()) names->insert(nm->value.GetString());
  }
  return n;
}

// One full GET of the collection; verifies it holds exactly `expected` distinct objects.
double fullList(HttpsClient& c, const std::string& ns, long expected, size_t* bytes) {
  auto t0 = Clock::now();
  Response r = c.request(http::verb::get, collection(ns));
  double ms = msBetween(t0, Clock::now());
  expect2xx(r, "full list");
  std::set<std::string> names;
  long n = countItems(r.body, &names, nullptr);
  if (n != expected || static_cast<long>(names.size()) != expected) {
    failure("full list returned " + std::to_string(n) + " items (" + std::to_string(names.size()) +
            " distinct), expected " + std::to_string(expected));
  }
  if (bytes != nullptr) *bytes = r.body.size();
  return ms;
}

// limit=500 paging to the end; verifies the pages add up to exactly `expected` distinct objects.
// Time includes the client-side parse needed to find each continue token (as a real client).
double pagedList(HttpsClient& c, const std::string& ns, long expected, size_t* bytes, int* pages) {
  std::set<std::string> names;
  long total = 0;
  size_t b = 0;
  int p = 0;
  std::string cont;
  double ms = 0;
  do {
    std::string target = collection(ns) + "?limit=500";
    if (!cont.empty()) target += "&continue=" + cont;  // the token is base64url: no escaping needed
    auto t0 = Clock::now();
    Response r = c.request(http::verb::get, target);
    ms += msBetween(t0, Clock::now());
    expect2xx(r, "paged list");
    if (!is2xx(r.status)) return ms;
    long n = countItems(r.body, &names, &cont);
    if (n < 0) {
      failure("paged list: unparsable page");
      return ms;
    }
    total += n;
    b += r.body.size();
    ++p;
  } while (!cont.empty() && p < 100000);
  if (total != expected || static_cast<long>(names.size()) != expected) {
    failure("paged list returned " + std::to_string(total) + " items (" + std::to_string(names.size()) +
            " distinct), expected " + std::to_string(expected));
  }
  *bytes = b;
  *pages = p;
  return ms;
}

struct RssPoint {
  std::string when;
  ProcStatus st;
};

struct StoreFigures {
  std::vector<RssPoint> rss;
  ListFigures list;
  double bulkCreatesPerS = 0;
  double storedObjectBytes = 0;
  std::optional<LatencyFigures> loadedLatency;
};

StoreFigures storePhase(const Options& o, ServerProcess& srv, Endpoint& ep, Watchdog& wd) {
  StoreFigures f;
  HttpsClient c(ep);
  const std::string ns = "default";
  expect2xx(c.request(http::verb::get, collection(ns) + "?limit=1"), "first request");
  auto rssAt = [&](const std::string& when) {
    f.rss.push_back({when, srv.status()});
    auto& s = f.rss.back().st;
    std::printf("    RSS %-42s %8.1f MiB  (peak %.1f MiB, %ld threads)\n", when.c_str(), s.rssKiB / 1024.0,
                s.hwmKiB / 1024.0, s.threads);
  };
  rssAt("idle, 0 ConfigMaps");

  std::vector<int> checkpoints;
  if (o.objects > 1000) checkpoints.push_back(1000);
  checkpoints.push_back(o.objects);
  int made = 0;
  size_t answerBytes = 0;
  double createS = 0;
  int bad = 0;
  for (int cp : checkpoints) {
    wd.arm("bulk create", 600);
    CpuTimes cpu0 = cpuTimes(srv.pid());
    int from = made;
    auto t0 = Clock::now();
    for (; made < cp; ++made) {
      Response r = c.request(http::verb::post, collection(ns), configMapJson(objectName("cm", made), o.objectBytes, 0));
      if (!is2xx(r.status)) {
        if (bad++ < 5) expect2xx(r, "bulk create " + objectName("cm", made));
        else ++gFailures;
      }
      answerBytes += r.body.size();
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    createS += s;
    std::printf("    bulk create %d..%d back to back: %.0f creates/s; %s\n", from, cp, (cp - from) / s,
                cpuPerOp(cpu0, cpuTimes(srv.pid()), cp - from, s).c_str());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the GC pass and allocator settle
    rssAt("after creating " + std::to_string(cp) + " ConfigMaps");
    wd.arm("full list", 120);
    size_t bytes = 0;
    double ms = fullList(c, ns, cp, &bytes);
    rssAt("after one full LIST of " + std::to_string(cp));
    std::printf("      (that LIST: %.1f ms, %.2f MiB)\n", ms, bytes / 1048576.0);
  }
  f.bulkCreatesPerS = made / createS;
  f.storedObjectBytes = static_cast<double>(answerBytes) / std::max(1, made);
  std::printf("    bulk load: %d creates back to back on one connection: %.0f creates/s\n", made, f.bulkCreatesPerS);

  wd.arm("list timings", 600);
  for (int i = 0; i < o.listRepeats; ++i) f.list.fullMs.push_back(fullList(c, ns, o.objects, &f.list.fullBytes));
  for (int i = 0; i < o.listRepeats; ++i) {
    f.list.pagedMs.push_back(pagedList(c, ns, o.objects, &f.list.pagedBytes, &f.list.pages));
  }
  auto full = summarize(f.list.fullMs);
  auto paged = summarize(f.list.pagedMs);
  std::printf("    LIST of %d ConfigMaps (%d repeats each; min / median / max ms):\n", o.objects, o.listRepeats);
  std::printf("      full (no limit):   %8.1f / %8.1f / %8.1f ms   %10zu B in 1 response\n", full.min, full.p50,
              full.max, f.list.fullBytes);
  std::printf("      paged (limit=500): %8.1f / %8.1f / %8.1f ms   %10zu B in %d responses\n", paged.min, paged.p50,
              paged.max, f.list.pagedBytes, f.list.pages);
  rssAt("after " + std::to_string(2 * o.listRepeats) + " more LISTs");
  return f;
}

// ---------------------------------------------------------------------------------------------
// Phase 3: watch fan-out

struct ReceivedLine {
  Clock::time_point at;
  std::string text;
};

// One watch connection on its own thread: connects, registers (the response header arrives only
// after the server has subscribed the watch), then timestamps every event line as it arrives.
// Parsing happens after the run so the hot path is only TLS read + line split.
class WatchClient {
 public:
  WatchClient(Endpoint& ep, std::string target) : ep_(ep), target_(std::move(target)) {}

  void start() { thread_ = std::thread([this] { run(); }); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  // Ends the stream from another thread: shutting the socket down wakes the blocked read.
  void shutdown() {
    int fd = fd_.load();
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }
  bool ready() const { return ready_.load(); }
  bool finished() const { return finished_.load(); }
  size_t received() const { return count_.load(); }
  const std::vector<ReceivedLine>& lines() const { return lines_; }
  const std::string& error() const { return error_; }

 private:
  void run() {
    try {
      stream_ = connectTls(ioc_, ep_);
      fd_ = stream_->next_layer().native_handle();
      auto req = makeRequest(ep_, http::verb::get, target_, "");
      http::write(*stream_, req);
      http::response_parser<http::string_body> parser;
      parser.body_limit(boost::none);
      http::read_header(*stream_, buf_, parser);
      if (parser.get().result_int() != 200) throw std::runtime_error("watch answered HTTP " + std::to_string(parser.get().result_int()));
      ready_ = true;
      std::string pending;
      auto onChunk = [&](std::uint64_t, beast::string_view body, beast::error_code&) -> std::size_t {
        auto now = Clock::now();
        pending.append(body.data(), body.size());
        size_t nl;
        while ((nl = pending.find('\n')) != std::string::npos) {
          lines_.push_back({now, pending.substr(0, nl)});
          pending.erase(0, nl + 1);
          ++count_;
        }
        return body.size();
      };
      parser.on_chunk_body(onChunk);
      while (!parser.is_done()) {
        beast::error_code ec;
        http::read_some(*stream_, buf_, parser, ec);
        if (ec) break;  // our shutdown(), or the server ended the stream
      }
    } catch (const std::exception& e) {
      error_ = e.what();
    }
    finished_ = true;
  }

  Endpoint& ep_;
  std::string target_;
  asio::io_context ioc_;
  std::unique_ptr<TlsStream> stream_;
  beast::flat_buffer buf_;
  std::thread thread_;
  std::atomic<int> fd_{-1};
  std::atomic<bool> ready_{false};
  std::atomic<bool> finished_{false};
  std::atomic<size_t> count_{0};
  std::vector<ReceivedLine> lines_;  // written by the thread only; read after join()
  std::string error_;
};

// The benchmark's own CPU time: on a small machine the watchers' TLS reads compete with the server.
double selfCpuMs() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto ms = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1000.0 + static_cast<double>(t.tv_usec) / 1000.0; };
  return ms(u.ru_utime) + ms(u.ru_stime);
}

struct ExpectedEvent {
  std::string type;
  std::string name;
  std::string rv;
  Clock::time_point sent, acked;
};

struct WatchFigures {
  Summary ackToEvent, sendToEvent;
  size_t eventsBeforeAck = 0;
  int watchersOk = 0;
  ProcStatus serverWithWatchers;
};

WatchFigures watchPhase(const Options& o, ServerProcess& srv, Endpoint& ep, Watchdog& wd) {
  WatchFigures f;
  const std::string ns = "default";
  HttpsClient c(ep);
  Response head = c.request(http::verb::get, collection(ns) + "?limit=1");
  expect2xx(head, "list before watch");
  rapidjson::Document hd;
  hd.Parse(head.body.data(), head.body.size());
  std::string fromRv = (!hd.HasParseError() && hd.IsObject() && hd.HasMember("metadata") &&
                        hd["metadata"].HasMember("resourceVersion"))
                           ? hd["metadata"]["resourceVersion"].GetString()
                           : "0";

  // Watching from a known revision: every write below must arrive, none from before.
  wd.arm("watch connect", 120);
  std::vector<std::unique_ptr<WatchClient>> ws;
  for (int i = 0; i < o.watchers; ++i) {
    ws.push_back(std::make_unique<WatchClient>(ep, collection(ns) + "?watch=true&resourceVersion=" + fromRv));
    ws.back()->start();
  }
  auto connectDeadline = Clock::now() + std::chrono::seconds(60);
  for (;;) {
    int ready = 0, dead = 0;
    for (auto& w : ws) {
      ready += w->ready();
      dead += (!w->ready() && w->finished());
    }
    if (ready == o.watchers) break;
    if (dead > 0 || Clock::now() > connectDeadline) {
      failure(std::to_string(o.watchers - ready) + " of " + std::to_string(o.watchers) + " watchers failed to start");
      for (auto& w : ws) {
        if (!w->error().empty()) {
          std::fprintf(stderr, "  watcher error: %s\n", w->error().c_str());
          break;
        }
      }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  f.serverWithWatchers = srv.status();

  // Half creates, half updates, so both ADDED and MODIFIED delivery are checked.
  int creates = (o.watchWrites + 1) / 2;
  std::vector<ExpectedEvent> expected(static_cast<size_t>(o.watchWrites));
  std::vector<std::string> createdRv(static_cast<size_t>(creates));
  wd.arm("watch writes", 120 + o.watchWrites / 10);
  int bad = 0;
  CpuTimes cpu0 = cpuTimes(srv.pid());
  double selfCpu0 = selfCpuMs();
  auto writesStart = Clock::now();
  auto paced = pacedWrites(
      c, o.watchWrites, o.rate,
      [&](int i) {
        if (i < creates) {
          return std::make_pair(http::verb::post,
                                std::make_pair(collection(ns), configMapJson(objectName("w", i), o.objectBytes, 0)));
        }
        std::string name = objectName("w", i - creates);
        return std::make_pair(http::verb::put,
                              std::make_pair(collection(ns) + "/" + name,
                                             configMapJson(name, o.objectBytes, 1, createdRv[static_cast<size_t>(i - creates)])));
      },
      [&](int i, const Response& r, Clock::time_point sent, Clock::time_point done) {
        auto& e = expected[static_cast<size_t>(i)];
        e.type = i < creates ? "ADDED" : "MODIFIED";
        e.name = objectName("w", i < creates ? i : i - creates);
        e.sent = sent;
        e.acked = done;
        if (!is2xx(r.status)) {
          if (bad++ < 5) expect2xx(r, "watch-phase write " + e.name);
          else ++gFailures;
          return;
        }
        e.rv = resourceVersionOf(r.body);
        if (i < creates) createdRv[static_cast<size_t>(i)] = e.rv;
      });

  // Every watcher should now catch up; then linger a little so duplicates would show.
  wd.arm("watch delivery", 120);
  auto deliveryDeadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    bool all = true;
    for (auto& w : ws) all = all && (w->received() >= expected.size() || w->finished());
    if (all || Clock::now() > deliveryDeadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CpuTimes cpu1 = cpuTimes(srv.pid());
  double selfCpu1 = selfCpuMs();
  double writesWallS = std::chrono::duration<double>(Clock::now() - writesStart).count();
  for (auto& w : ws) w->shutdown();
  for (auto& w : ws) w->join();

  std::map<std::string, size_t> byRv;
  for (size_t i = 0; i < expected.size(); ++i) byRv[expected[i].rv] = i;
  std::vector<double> ackToEvent, sendToEvent;
  int reported = 0;
  size_t totalMissing = 0, totalDuplicate = 0, totalUnexpected = 0, totalReordered = 0;
  for (size_t wi = 0; wi < ws.size(); ++wi) {
    auto& w = *ws[wi];
    std::vector<std::pair<ExpectedEvent, Clock::time_point>> got;
    size_t unexpected = 0;
    for (const auto& line : w.lines()) {
      rapidjson::Document d;
      d.Parse(line.text.data(), line.text.size());
      if (d.HasParseError() || !d.IsObject() || !d.HasMember("type") || !d["type"].IsString()) {
        ++unexpected;
        continue;
      }
      std::string type = d["type"].GetString();
      if (type == "BOOKMARK") continue;
      ExpectedEvent e;
      e.type = type;
      if (d.HasMember("object") && d["object"].IsObject() && d["object"].HasMember("metadata")) {
        const auto& md = d["object"]["metadata"];
        if (md.HasMember("name") && md["name"].IsString()) e.name = md["name"].GetString();
        if (md.HasMember("resourceVersion") && md["resourceVersion"].IsString()) e.rv = md["resourceVersion"].GetString();
      }
      got.emplace_back(e, line.at);
    }
    // Exactly once, in order: the received sequence must equal the written one.
    bool same = got.size() == expected.size();
    for (size_t i = 0; same && i < got.size(); ++i) {
      const auto& g = got[i].first;
      same = g.type == expected[i].type && g.name == expected[i].name && g.rv == expected[i].rv;
    }
    std::map<std::string, int> seen;
    size_t reordered = 0;
    long lastIndex = -1;
    for (const auto& [g, at] : got) {
      auto it = byRv.find(g.rv);
      if (it == byRv.end() || expected[it->second].name != g.name || expected[it->second].type != g.type) {
        ++unexpected;
        continue;
      }
      if (seen[g.rv]++ > 0) continue;  // counted as a duplicate below
      if (static_cast<long>(it->second) < lastIndex) ++reordered;
      lastIndex = static_cast<long>(it->second);
      ackToEvent.push_back(msBetween(expected[it->second].acked, at));
      sendToEvent.push_back(msBetween(expected[it->second].sent, at));
    }
    size_t duplicate = 0, missing = 0;
    for (const auto& e : expected) {
      auto it = seen.find(e.rv);
      if (it == seen.end()) ++missing;
      else duplicate += static_cast<size_t>(it->second - 1);
    }
    totalMissing += missing;
    totalDuplicate += duplicate;
    totalUnexpected += unexpected;
    totalReordered += reordered;
    if (same && w.error().empty()) {
      ++f.watchersOk;
    } else if (reported++ < 5) {
      failure("watcher " + std::to_string(wi) + ": received " + std::to_string(got.size()) + " events for " +
              std::to_string(expected.size()) + " writes: " + std::to_string(missing) + " missing, " +
              std::to_string(duplicate) + " duplicated, " + std::to_string(reordered) + " out of order, " +
              std::to_string(unexpected) + " unexpected" + (w.error().empty() ? "" : "; error: " + w.error()));
    } else {
      ++gFailures;
    }
  }
  for (double v : ackToEvent) f.eventsBeforeAck += v < 0;
  f.ackToEvent = summarize(ackToEvent);
  f.sendToEvent = summarize(sendToEvent);
  std::printf("    %d watchers (one HTTPS connection and client thread each) on %s from resourceVersion %s;\n"
              "    %d writes (%d creates, %d updates) due every %.2f ms\n",
              o.watchers, collection(ns).c_str(), fromRv.c_str(), o.watchWrites, creates, o.watchWrites - creates,
              1000.0 / o.rate);
  printSummaryHeader();
  printSummary("write sent -> event at watcher", f.sendToEvent);
  printSummary("write acked -> event at watcher", f.ackToEvent);
  std::printf("    events that reached a watcher before the writer had read its own answer: %zu of %zu (the\n"
              "    negative ack -> event figures: the server fans the event out before it writes the answer)\n",
              f.eventsBeforeAck, ackToEvent.size());
  std::printf("    exactly once, in order: %d of %d watchers; totals: %zu missing, %zu duplicated, %zu out of order, %zu unexpected\n",
              f.watchersOk, o.watchers, totalMissing, totalDuplicate, totalReordered, totalUnexpected);
  std::printf("    writes plus delivery (until 0.5 s after the last event): %s\n", cpuPerOp(cpu0, cpu1, o.watchWrites, writesWallS).c_str());
  std::printf("    this benchmark's own CPU in that time (writer + %d watcher threads, same machine): %.2f ms per write\n",
              o.watchers, (selfCpu1 - selfCpu0) / o.watchWrites);
  std::printf("    server with %d watchers open: RSS %.1f MiB, %ld threads\n", o.watchers,
              f.serverWithWatchers.rssKiB / 1024.0, f.serverWithWatchers.threads);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Conditions

std::string cpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return trim(line.substr(line.find(':') + 1));
  }
  return "unknown";
}

std::string memTotal() {
  std::ifstream f("/proc/meminfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("MemTotal:", 0) == 0) {
      return std::to_string(std::strtol(line.c_str() + 9, nullptr, 10) / 1024 / 1024) + " GiB";
    }
  }
  return "unknown";
}

std::string fsType(const std::string& path) {
  struct statfs s {};
  if (::statfs(path.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53: return "ext4";
    case 0x01021994: return "tmpfs (fsync is free: write latencies are not disk-backed)";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794C7630: return "overlayfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "fs magic 0x%lx", static_cast<unsigned long>(s.f_type));
      return buf;
    }
  }
}

// The build type of the server binary, from the CMake cache of the tree that built it.
std::string serverBuildType(const std::string& foxden) {
  fs::path cache = fs::weakly_canonical(fs::path(foxden)).parent_path().parent_path() / "CMakeCache.txt";
  std::ifstream f(cache);
  if (!f) return "unknown (no CMakeCache.txt next to the binary)";
  std::string line, type = "?", sanitize = "OFF", flags;
  while (std::getline(f, line)) {
    if (line.rfind("CMAKE_BUILD_TYPE:", 0) == 0) type = line.substr(line.find('=') + 1);
    if (line.rfind("FOXDEN_SANITIZE:", 0) == 0) sanitize = line.substr(line.find('=') + 1);
    if (line.rfind("CMAKE_CXX_FLAGS:", 0) == 0) flags = line.substr(line.find('=') + 1);
  }
  std::string out = type + " (" + cache.string() + ")";
  if (sanitize == "ON") out += ", SANITIZERS ON: not representative";
  if (!flags.empty()) out += ", CMAKE_CXX_FLAGS=" + flags;
  return out;
}

void printConditions(const Options& o) {
  utsname u{};
  ::uname(&u);
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  int usable = ::sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : -1;
  std::printf("Conditions\n");
  std::printf("  CPU:            %s; nproc %d (online %u); RAM %s\n", cpuModel().c_str(), usable,
              std::thread::hardware_concurrency(), memTotal().c_str());
  std::printf("  kernel:         %s %s\n", u.sysname, u.release);
  std::printf("  load average:   %s (at start; other work on the machine shares the CPUs)\n", loadAverage().c_str());
  std::printf("  server:         %s\n", o.foxden.c_str());
  std::printf("  server build:   %s\n", serverBuildType(o.foxden).c_str());
#if defined(NDEBUG) && defined(__OPTIMIZE__)
  std::printf("  bench build:    optimised, NDEBUG\n");
#else
  std::printf("  bench build:    NOT optimised or assertions on\n");
#endif
  std::printf("  data dirs:      %s (%s); SQLite %s, WAL, synchronous=FULL\n", o.dataRoot.c_str(),
              fsType(o.dataRoot).c_str(), sqlite3_libversion());
  std::printf("  CRDs:           %s\n", o.crds.empty() ? "(none)" : o.crds.c_str());
  std::printf("  client:         Boost.Beast %d.%d / Asio SSL, keep-alive, CA-verified, bearer token; in this process\n",
              BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000);
  std::printf("  objects:        ConfigMaps with a %d-byte JSON request body\n", o.objectBytes);
  std::printf("  counts:         --writes %d --objects %d --watchers %d --watch-writes %d --rate %.0f --list-repeats %d\n\n",
              o.writes, o.objects, o.watchers, o.watchWrites, o.rate, o.listRepeats);
}

// ---------------------------------------------------------------------------------------------

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: apiserver_bench [--foxden PATH] [--crds DIR] [--writes N] [--objects N] [--watchers N]\n"
               "                       [--watch-writes N] [--rate WRITES_PER_S] [--object-bytes B]\n"
               "                       [--list-repeats N] [--data-root DIR] [--keep] [--quick]\n"
               "                       [--phases latency,store,watch]\n"
               "  --foxden   server binary (default: foxden next to this binary, else ./build/bin/foxden)\n"
               "  --crds     CRD directory passed to the server (default: ./crds if present)\n"
               "  --quick    smoke run: --writes 200 --objects 1000 --watchers 10 --watch-writes 50 --list-repeats 2\n"
               "  --keep     keep the servers' data dirs (and logs) under --data-root (default $TMPDIR or /tmp)\n");
  std::exit(code);
}

Options parseArgs(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string> given;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (a == "--quick") {
      o.quick = true;
      continue;
    }
    if (a == "--keep") {
      o.keep = true;
      continue;
    }
    std::string value;
    if (auto eq = a.find('='); eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "%s needs a value\n", a.c_str());
      usage(2);
    }
    given[a] = value;
  }
  if (o.quick) {
    o.writes = 200;
    o.objects = 1000;
    o.watchers = 10;
    o.watchWrites = 50;
    o.listRepeats = 2;
  }
  auto intArg = [&](const char* name, int& out, int lo) {
    auto it = given.find(name);
    if (it == given.end()) return;
    try {
      out = std::stoi(it->second);
    } catch (const std::exception&) {
      out = lo - 1;
    }
    if (out < lo) {
      std::fprintf(stderr, "%s must be an integer >= %d\n", name, lo);
      usage(2);
    }
    given.erase(it);
  };
  intArg("--writes", o.writes, 1);
  intArg("--objects", o.objects, 1);
  intArg("--watchers", o.watchers, 1);
  intArg("--watch-writes", o.watchWrites, 2);
  intArg("--object-bytes", o.objectBytes, 100);
  intArg("--list-repeats", o.listRepeats, 1);
  if (auto it = given.find("--rate"); it != given.end()) {
    o.rate = std::atof(it->second.c_str());
    if (o.rate <= 0 || o.rate > 100000) {
      std::fprintf(stderr, "--rate must be in (0, 100000]\n");
      usage(2);
    }
    given.erase(it);
  }
  if (auto it = given.find("--phases"); it != given.end()) {
    o.phases.clear();
    std::istringstream in(it->second);
    std::string p;
    while (std::getline(in, p, ',')) {
      if (p != "latency" && p != "store" && p != "watch") {
        std::fprintf(stderr, "--phases: unknown phase \"%s\"\n", p.c_str());
        usage(2);
      }
      o.phases.insert(p);
    }
    given.erase(it);
  }
  for (const char* name : {"--foxden", "--crds", "--data-root"}) {
    if (auto it = given.find(name); it != given.end()) {
      (std::string(name) == "--foxden" ? o.foxden : std::string(name) == "--crds" ? o.crds : o.dataRoot) = it->second;
      given.erase(it);
    }
  }
  if (!given.empty()) {
    std::fprintf(stderr, "unknown option %s\n", given.begin()->first.c_str());
    usage(2);
  }
  if (o.foxden.empty()) {
    // The server built alongside this benchmark, so the two never come from different trees.
    std::error_code ec;
    fs::path sibling = fs::read_symlink("/proc/self/exe", ec).parent_path() / "foxden";
    o.foxden = !ec && fs::exists(sibling) ? sibling.string() : "./build/bin/foxden";
  }
  if (o.crds.empty() && fs::is_directory("crds")) o.crds = "crds";
  if (!o.crds.empty()) o.crds = fs::absolute(o.crds).string();
  if (o.dataRoot.empty()) o.dataRoot = std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp";
  o.foxden = fs::absolute(o.foxden).string();
  if (::access(o.foxden.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "cannot execute %s (build it: cmake --build build --target foxden)\n", o.foxden.c_str());
    std::exit(2);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parseArgs(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("foxden server benchmark\n\n");
  printConditions(o);
  Watchdog wd;

  std::optional<Summary> commitBefore, commitAfter;
  auto probe = [&](const char* when) -> std::optional<Summary> {
    try {
      wd.arm("sqlite probe", 120);
      int commits = std::min(1000, std::max(200, o.writes / 2));
      Summary s = sqliteCommitProbe(o.dataRoot, commits, o.rate);
      std::printf("0. Bare SQLite commit (WAL, synchronous=FULL, upsert + revision bump), %d at %.0f/s, in %s, %s:\n",
                  commits, o.rate, o.dataRoot.c_str(), when);
      printSummaryHeader();
      printSummary("commit", s);
      std::printf("\n");
      return s;
    } catch (const std::exception& e) {
      std::printf("0. SQLite commit probe failed: %s\n\n", e.what());
      return std::nullopt;
    }
  };
  commitBefore = probe("before the server phases");
  std::optional<LatencyFigures> lat;
  std::optional<StoreFigures> store;
  std::optional<WatchFigures> watch;
  double startupMs = 0;

  if (o.phases.count("latency")) try {
    wd.arm("start server", 120);
    ServerProcess srv(o, "latency");
    startupMs = srv.startupMs();
    Endpoint ep(srv);
    std::printf("1. Write latency, fresh server (pid %d, port %u, started in %.0f ms), empty store; load %s\n",
                srv.pid(), srv.port(), startupMs, loadAverage().c_str());
    wd.arm("write latency", 120 + static_cast<int>(4 * o.writes / o.rate));
    lat = latencyPhase(o, ep, srv.pid(), "default", "lat");
    auto st = srv.status();
    std::printf("    server afterwards: RSS %.1f MiB with %d ConfigMaps\n\n", st.rssKiB / 1024.0, o.writes);
  } catch (const std::exception& e) {
    failure(std::string("write latency phase: ") + e.what());
  }

  if (o.phases.count("store")) try {
    wd.arm("start server", 120);
    ServerProcess srv(o, "store");
    Endpoint ep(srv);
    std::printf("2+4. Stored objects, LIST and RSS, fresh server (pid %d); load %s\n", srv.pid(), loadAverage().c_str());
    store = storePhase(o, srv, ep, wd);
    HttpsClient admin(ep);
    ensureNamespace(admin, "bench-lat");
    std::printf("  1b. Write latency again with %d ConfigMaps stored (new objects in namespace bench-lat); load %s\n",
                o.objects, loadAverage().c_str());
    wd.arm("loaded write latency", 120 + static_cast<int>(4 * o.writes / o.rate));
    store->loadedLatency = latencyPhase(o, ep, srv.pid(), "bench-lat", "lat");
    std::printf("\n");
  } catch (const std::exception& e) {
    failure(std::string("store phase: ") + e.what());
  }

  if (o.phases.count("watch")) try {
    wd.arm("start server", 120);
    ServerProcess srv(o, "watch");
    Endpoint ep(srv);
    std::printf("3. Watch fan-out, fresh server (pid %d); load %s\n", srv.pid(), loadAverage().c_str());
    watch = watchPhase(o, srv, ep, wd);
    std::printf("\n");
  } catch (const std::exception& e) {
    failure(std::string("watch phase: ") + e.what());
  }
  commitAfter = probe("after the server phases");
  wd.arm("report", 60);

  std::printf("Summary\n");
  auto verdict = [](bool met) { return met ? "MET" : "NOT MET"; };
  if (commitBefore && commitAfter) {
    std::printf("  bare SQLite commit (context: the disk is shared and drifts): p50 %.2f / %.2f ms, p99 %.2f / %.2f ms (before / after)\n",
                commitBefore->p50, commitAfter->p50, commitBefore->p99, commitAfter->p99);
  }
  if (lat) {
    std::printf("  create p50 %.2f ms, p99 %.2f ms, max %.2f ms; update p50 %.2f ms, p99 %.2f ms, max %.2f ms (at %.0f/s)\n",
                lat->create.p50, lat->create.p99, lat->create.max, lat->update.p50, lat->update.p99, lat->update.max, o.rate);
    bool met = lat->create.p99 <= 10 && lat->update.p99 <= 10;
    std::printf("  target write p99 <= 10 ms at 200 writes/s: %s%s\n", verdict(met),
                o.rate == 200 ? "" : " (but --rate is not 200)");
  }
  if (store) {
    for (const auto& p : store->rss) {
      if (p.when == "after creating 1000 ConfigMaps") {
        std::printf("  target RSS <= 64 MiB at 1,000 ConfigMaps: %s (%.1f MiB)\n", verdict(p.st.rssKiB <= 64 * 1024),
                    p.st.rssKiB / 1024.0);
      }
    }
    if (store->loadedLatency) {
      std::printf("  with %d stored: create p99 %.2f ms, update p99 %.2f ms\n", o.objects,
                  store->loadedLatency->create.p99, store->loadedLatency->update.p99);
    }
  }
  if (watch) {
    std::printf("  watch: %d/%d watchers got every event exactly once, in order; write sent -> event p50 %.2f ms, p99 %.2f ms;\n"
                "         write acked -> event p50 %.2f ms, p99 %.2f ms\n",
                watch->watchersOk, o.watchers, watch->sendToEvent.p50, watch->sendToEvent.p99, watch->ackToEvent.p50,
                watch->ackToEvent.p99);
  }
  if (gFailures > 0) {
    std::printf("\nCORRECTNESS FAILURES: %d (see stderr)\n", gFailures.load());
    return 1;
  }
  std::printf("\nall correctness checks passed\n");
  return 0;
}
