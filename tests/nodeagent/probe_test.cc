// Probes: parsing, one-shot httpGet / tcpSocket / exec (on the host), and ProbeRunner's kubelet
// threshold semantics. Exec inside a real task's namespaces is tests/integration/probe_check.cc.
#include "nodeagent/probes/probe.h"

#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "kube/http_server.h"

namespace nodeagent {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::map<std::string, int> kPorts = {{"http", 8080}, {"admin", 9090}};

kube::StatusOr<ProbeSpec> parse(const std::string& text) {
  auto doc = kube::parseJson(text);
  REQUIRE(doc.isOk());
  return parseProbe(*doc, kPorts);
}

std::string parseError(const std::string& text) {
  auto p = parse(text);
  REQUIRE_FALSE(p.isOk());
  return p.status().message();
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

// A TCP listener on 127.0.0.1 with a kernel-chosen port (connects complete in the backlog).
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(fd, 16) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() { close(fd); }
};

// A port nothing listens on: bound once, then released.
int closedPort() {
  Listener l;
  return l.port;
}

ProbeSpec execSpec(std::vector<std::string> command, std::chrono::milliseconds timeout = 2000ms) {
  ProbeSpec s;
  s.kind = ProbeKind::kExec;
  s.command = std::move(command);
  s.timeout = timeout;
  return s;
}

TEST_CASE("parseProbe: handlers, defaults and named ports") {
  auto e = parse(R"({"exec":{"command":["cat","/tmp/healthy"]}})");
  REQUIRE(e.isOk());
  CHECK(e->kind == ProbeKind::kExec);
  CHECK(e->command == std::vector<std::string>{"cat", "/tmp/healthy"});
  CHECK(e->initialDelay == 0ms);
  CHECK(e->period == 10s);
  CHECK(e->timeout == 1s);
  CHECK(e->successThreshold == 1);
  CHECK(e->failureThreshold == 3);

  auto h = parse(R"({"httpGet":{"path":"healthz","port":"http","httpHeaders":[{"name":"X-A","value":"b c"}]},
                     "initialDelaySeconds":5,"periodSeconds":2,"timeoutSeconds":3,
                     "successThreshold":2,"failureThreshold":4})");
  REQUIRE(h.isOk());
  CHECK(h->kind == ProbeKind::kHttpGet);
  CHECK(h->port == 8080);
  CHECK(h->host == "127.0.0.1");
  CHECK(h->path == "/healthz");
  REQUIRE(h->headers.size() == 1);
  CHECK(h->headers[0].name == "X-A");
  CHECK(h->headers[0].value == "b c");
  CHECK(h->initialDelay == 5s);
  CHECK(h->period == 2s);
  CHECK(h->timeout == 3s);
  CHECK(h->successThreshold == 2);
  CHECK(h->failureThreshold == 4);

  auto d = parse(R"({"httpGet":{"port":80,"scheme":"HTTP"}})");
  REQUIRE(d.isOk());
  CHECK(d->path == "/");

  auto t = parse(R"({"tcpSocket":{"port":"admin","host":"10.0.0.2"}})");
  REQUIRE(t.isOk());
  CHECK(t->kind == ProbeKind::kTcpSocket);
  CHECK(t->port == 9090);
  CHECK(t->host == "10.0.0.2");
}

TEST_CASE("parseProbe: clear errors for bad input") {
  CHECK(contains(parseError(R"({"periodSeconds":3})"), "needs one handler"));
  CHECK(contains(parseError(R"({"exec":{"command":["x"]},"tcpSocket":{"port":1}})"), "only one handler"));
  CHECK(contains(parseError(R"({"httpGet":{"port":"metrics"}})"), "unknown named port \"metrics\""));
  CHECK(contains(parseError(R"({"tcpSocket":{"port":70000}})"), "out of range"));
  CHECK(contains(parseError(R"({"tcpSocket":{"port":0}})"), "out of range"));
  CHECK(contains(parseError(R"({"tcpSocket":{}})"), "port is required"));
  CHECK(contains(parseError(R"({"httpGet":{"port":80,"scheme":"HTTPS"}})"), "HTTPS is not supported"));
  CHECK(contains(parseError(R"({"httpGet":{"port":80,"scheme":"FTP"}})"), "must be HTTP"));
  CHECK(contains(parseError(R"({"httpGet":{"port":80,"path":"/a b"}})"), "path"));
  CHECK(contains(parseError(R"({"httpGet":{"port":80,"httpHeaders":[{"name":"X","value":"a\r\nB: c"}]}})"),
                 "control characters"));
  CHECK(contains(parseError(R"({"exec":{"command":[]}})"), "non-empty array"));
  CHECK(contains(parseError(R"({"exec":{"command":["ls",3]}})"), "non-empty array"));
  CHECK(contains(parseError(R"({"exec":{"command":["x"]},"periodSeconds":0})"), "periodSeconds must be positive"));
  CHECK(contains(parseError(R"({"exec":{"command":["x"]},"timeoutSeconds":-1})"), "timeoutSeconds must be positive"));
  CHECK(contains(parseError(R"({"exec":{"command":["x"]},"failureThreshold":0})"), "failureThreshold"));
  CHECK(contains(parseError(R"({"exec":{"command":["x"]},"initialDelaySeconds":-1})"), "non-negative"));
  CHECK(contains(parseError(R"({"exec":{"command":["x"]},"periodSeconds":"10"})"), "must be an integer"));
  CHECK(contains(parseError(R"({"grpc":{"port":9000}})"), "grpc probes are not supported"));
  CHECK(contains(parseError(R"("exec")"), "must be an object"));
}

TEST_CASE("httpGet: 2xx/3xx succeed, 5xx fails, headers are sent") {
  std::atomic<int> status{200};
  std::mutex mu;
  std::string seenPath, seenHeader, seenHost;
  kube::HttpServerOptions o;
  auto server = kube::startHttpServer(o, [&](const kube::ServerRequest& req, kube::ResponseWriter& w) {
    {
      std::lock_guard<std::mutex> l(mu);
      seenPath = req.path;
      seenHeader = req.header("x-probe");
      seenHost = req.header("host");
    }
    w.respond(status.load(), "text/plain", "body");
  });
  REQUIRE(server.isOk());
  int port = (*server)->port();
  auto spec = parse(R"({"httpGet":{"path":"/healthz","port":)" + std::to_string(port) +
                    R"(,"httpHeaders":[{"name":"X-Probe","value":"yes"}]}})");
  REQUIRE(spec.isOk());

  auto ok = runProbe(*spec, 0);
  CHECK_MESSAGE(ok.success, ok.message);
  {
    std::lock_guard<std::mutex> l(mu);
    CHECK(seenPath == "/healthz");
    CHECK(seenHeader == "yes");
    CHECK(seenHost == "127.0.0.1:" + std::to_string(port));
  }
  status = 302;
  CHECK(runProbe(*spec, 0).success);
  status = 500;
  auto bad = runProbe(*spec, 0);
  CHECK_FALSE(bad.success);
  CHECK(contains(bad.message, "500"));
  status = 404;
  CHECK_FALSE(runProbe(*spec, 0).success);
  (*server)->stop();

  spec->port = closedPort();
  auto refused = runProbe(*spec, 0);
  CHECK_FALSE(refused.success);
  CHECK(contains(refused.message, "refused"));
}

TEST_CASE("httpGet: a server that accepts but never answers times out") {
  Listener l;  // in the backlog, never accepted: connect succeeds, no response comes
  ProbeSpec s;
  s.kind = ProbeKind::kHttpGet;
  s.port = l.port;
  s.timeout = 300ms;
  auto t0 = Clock::now();
  auto r = runProbe(s, 0);
  CHECK_FALSE(r.success);
  CHECK(contains(r.message, "timed out"));
  CHECK(Clock::now() - t0 < 10s);
}

TEST_CASE("tcpSocket: open and closed ports") {
  Listener l;
  ProbeSpec s;
  s.kind = ProbeKind::kTcpSocket;
  s.port = l.port;
  CHECK(runProbe(s, 0).success);
  s.port = closedPort();
  auto r = runProbe(s, 0);
  CHECK_FALSE(r.success);
  CHECK(contains(r.message, "refused"));
}

TEST_CASE("exec on the host: exit status, output, timeout, missing command") {
  CHECK(runProbe(execSpec({"/bin/true"}), 0).success);
  auto f = runProbe(execSpec({"/bin/false"}), 0);
  CHECK_FALSE(f.success);
  CHECK(contains(f.message, "status 1"));

  auto out = runProbe(execSpec({"sh", "-c", "echo hello; echo oops >&2"}), 0);  // found in PATH
  CHECK(out.success);
  CHECK(contains(out.message, "hello"));
  CHECK(contains(out.message, "oops"));

  auto t0 = Clock::now();
  auto slow = runProbe(execSpec({"sleep", "30"}, 300ms), 0);
  CHECK_FALSE(slow.success);
  CHECK(contains(slow.message, "timed out"));
  CHECK(Clock::now() - t0 < 10s);  // killed, not waited for

  // A background child holding the output pipe open does not stretch the probe either.
  t0 = Clock::now();
  auto bg = runProbe(execSpec({"sh", "-c", "sleep 30 & exit 0"}, 5000ms), 0);
  CHECK(bg.success);
  CHECK(Clock::now() - t0 < 10s);

  auto missing = runProbe(execSpec({"/nonexistent/probe"}), 0);
  CHECK_FALSE(missing.success);
  CHECK(contains(missing.message, "execve"));
}

size_t openFds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST_CASE("probes leak no fds and leave no children") {
  ProbeSpec tcp;
  tcp.kind = ProbeKind::kTcpSocket;
  tcp.port = closedPort();
  ProbeSpec http = tcp;
  http.kind = ProbeKind::kHttpGet;
  size_t before = openFds();
  for (int i = 0; i < 5; ++i) {
    CHECK(runProbe(execSpec({"/bin/true"}), 0).success);
    CHECK_FALSE(runProbe(execSpec({"/nonexistent"}), 0).success);
    CHECK_FALSE(runProbe(execSpec({"sleep", "30"}, 50ms), 0).success);
    CHECK_FALSE(runProbe(tcp, 0).success);
    CHECK_FALSE(runProbe(http, 0).success);
  }
  CHECK(openFds() == before);
  CHECK(waitpid(-1, nullptr, WNOHANG) == -1);  // every child was reaped: ECHILD
  CHECK(errno == ECHILD);
}

// Records the runner's callbacks and lets the test wait for them.
struct Events {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<bool> seen;

  ProbeRunner::Callback callback() {
    return [this](bool healthy) {
      std::lock_guard<std::mutex> l(mu);
      seen.push_back(healthy);
      cv.notify_all();
    };
  }
  bool waitFor(size_t n, std::chrono::milliseconds d = 20s) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, d, [&] { return seen.size() >= n; });
  }
  std::vector<bool> snapshot() {
    std::lock_guard<std::mutex> l(mu);
    return seen;
  }
};

struct TempFile {
  std::string path;
  TempFile() {
    char tmpl[] = "/tmp/foxden-probe-XXXXXX";
    int fd = mkstemp(tmpl);
    close(fd);
    path = tmpl;
    std::remove(path.c_str());
  }
  ~TempFile() { std::remove(path.c_str()); }
  void create() { std::ofstream(path) << "ok\n"; }
  void remove() { std::remove(path.c_str()); }
};

TEST_CASE("ProbeRunner: readiness transitions after the thresholds, callbacks on changes only") {
  TempFile flag;
  ProbeSpec s = execSpec({"test", "-f", flag.path});
  s.period = 20ms;
  s.successThreshold = 3;
  s.failureThreshold = 2;
  Events ev;
  ProbeRunner runner;
  runner.start(s, 0, ev.callback(), /*initiallyHealthy=*/false);
  // Failing while already unhealthy: no callback.
  std::this_thread::sleep_for(200ms);
  CHECK(ev.snapshot().empty());
  CHECK_FALSE(runner.healthy());
  CHECK_FALSE(runner.lastResult().success);

  flag.create();
  REQUIRE(ev.waitFor(1));
  CHECK(runner.healthy());
  flag.remove();
  REQUIRE(ev.waitFor(2));
  CHECK_FALSE(runner.healthy());
  flag.create();
  REQUIRE(ev.waitFor(3));
  runner.stop();
  CHECK(ev.snapshot() == std::vector<bool>{true, false, true});
}

TEST_CASE("ProbeRunner: a result flips only after N consecutive results") {
  // The command alternates success and failure: with thresholds of 2 no run is long enough.
  TempFile counter;
  ProbeSpec s = execSpec({"sh", "-c", "n=$(cat " + counter.path + " 2>/dev/null || echo 0); "
                                      "echo $((n+1)) > " + counter.path + "; [ $((n % 2)) -eq 0 ]"});
  s.period = 20ms;
  s.successThreshold = 2;
  s.failureThreshold = 2;
  Events ev;
  ProbeRunner runner;
  runner.start(s, 0, ev.callback(), /*initiallyHealthy=*/true);
  // Wait until at least 8 probes ran (the command counts them), however slow the machine.
  auto deadline = Clock::now() + 30s;
  int runs = 0;
  while (Clock::now() < deadline) {
    std::ifstream in(counter.path);
    if (in >> runs && runs >= 8) break;
    std::this_thread::sleep_for(20ms);
  }
  runner.stop();
  CHECK(runs >= 8);
  CHECK(ev.snapshot().empty());
  CHECK(runner.healthy());
}

TEST_CASE("ProbeRunner: liveness fails after failureThreshold and initial delay defers probing") {
  ProbeSpec s = execSpec({"/bin/false"});
  s.period = 20ms;
  s.failureThreshold = 3;
  Events ev;
  ProbeRunner runner;
  runner.start(s, 0, ev.callback(), /*initiallyHealthy=*/true);
  REQUIRE(ev.waitFor(1));
  CHECK(ev.snapshot() == std::vector<bool>{false});
  CHECK(contains(runner.lastResult().message, "status 1"));
  runner.stop();

  // With an initial delay far beyond the test, nothing is probed and stop() still returns at once.
  Events quiet;
  s.initialDelay = std::chrono::hours(1);
  runner.start(s, 0, quiet.callback(), true);
  std::this_thread::sleep_for(100ms);
  auto t0 = Clock::now();
  runner.stop();
  CHECK(Clock::now() - t0 < 5s);
  CHECK(quiet.snapshot().empty());
  CHECK(runner.lastResult().message.empty());
}

TEST_CASE("ProbeRunner: stop() cancels a probe in flight") {
  ProbeSpec s = execSpec({"sleep", "60"}, 120s);
  s.period = 1s;
  Events ev;
  ProbeRunner runner;
  runner.start(s, 0, ev.callback(), true);
  std::this_thread::sleep_for(200ms);  // the sleep is running
  auto t0 = Clock::now();
  runner.stop();
  CHECK(Clock::now() - t0 < 10s);
  CHECK(ev.snapshot().empty());  // a cancelled probe is no result

  // The runner can be started again after stop().
  Events again;
  runner.start(execSpec({"/bin/true"}), 0, again.callback(), false);
  REQUIRE(again.waitFor(1));
  CHECK(again.snapshot() == std::vector<bool>{true});
}

}  // namespace
}  // namespace nodeagent
