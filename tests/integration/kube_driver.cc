// kube_driver: exercises the kube/ library against a real `foxden server`, for the integration
// tests that need a C++ client.
//
//   kube_driver elect --kubeconfig FILE --identity ID [--lease-ms N]
//       Campaigns for Lease foxden-system/test-leader; prints "LEADING ID" when it leads,
//       "LEADER <holder>" when it observes a new leader, "STOPPED ID" when it stops leading.
//       Runs until killed (SIGTERM releases the lease).
//   kube_driver informer --foxden BIN --crds DIR --work DIR
//       Starts its own server, then checks that an informer's cache matches a fresh LIST after
//       live writes, after a 410 (too old resourceVersion) and across a kill -9 and restart of the
//       server. Prints one line per check and "N passed, N failed".

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kube/http_client.h"
#include "kube/informer.h"
#include "kube/kubeconfig.h"
#include "kube/leader_election.h"
#include "kube/rest_client.h"

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& def = "") {
  for (int i = 2; i + 1 < argc; ++i) {
    if (argv[i] == name) return argv[i + 1];
  }
  return def;
}

kube::RestClientPtr client(const std::string& kubeconfig, int portOverride = 0) {
  auto cfg = kube::loadKubeconfig(kubeconfig);
  if (cfg && portOverride != 0) cfg->server = "https://127.0.0.1:" + std::to_string(portOverride);
  if (!cfg) {
    std::cerr << "kubeconfig: " << cfg.status().message() << "\n";
    std::exit(2);
  }
  kube::HttpClientOptions ho;
  ho.requestTimeout = std::chrono::seconds(10);
  auto http = kube::newHttpClient(*cfg, ho);
  if (!http) {
    std::cerr << "client: " << http.status().message() << "\n";
    std::exit(2);
  }
  return std::make_shared<kube::RestClient>(*http);
}

std::atomic<bool> gStop{false};

int elect(int argc, char** argv) {
  signal(SIGTERM, [](int) { gStop = true; });
  std::string id = arg(argc, argv, "--identity");
  kube::LeaderElectionConfig cfg;
  cfg.leaseNamespace = "foxden-system";
  cfg.leaseName = "test-leader";
  cfg.identity = id;
  long leaseMs = std::stol(arg(argc, argv, "--lease-ms", "3000"));
  cfg.leaseDuration = std::chrono::milliseconds(leaseMs);
  cfg.renewDeadline = std::chrono::milliseconds(leaseMs * 2 / 3);
  cfg.retryPeriod = std::chrono::milliseconds(leaseMs / 6);
  cfg.onStartedLeading = [id] { std::cout << "LEADING " << id << std::endl; };
  cfg.onStoppedLeading = [id] { std::cout << "STOPPED " << id << std::endl; };
  cfg.onNewLeader = [](const std::string& h) { std::cout << "LEADER " << h << std::endl; };
  auto le = kube::LeaderElector::create(client(arg(argc, argv, "--kubeconfig")), cfg);
  if (!le) {
    std::cerr << le.status().message() << "\n";
    return 2;
  }
  (*le)->start();
  while (!gStop && !(*le)->finished()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  (*le)->stop();
  return 0;
}

// --- informer scenario ----------------------------------------------------------------------

struct ServerProcess {
  std::string bin, crds, data;
  int port = 0;
  pid_t pid = -1;

  bool start() {
    pid = fork();
    if (pid == 0) {
      std::string listen = "127.0.0.1:" + std::to_string(port);
      std::string log = data + ".log";
      FILE* f = std::freopen(log.c_str(), "a", stderr);
      (void)f;
      execl(bin.c_str(), bin.c_str(), "server", "--data-dir", data.c_str(), "--listen",
            listen.c_str(), "--crds", crds.c_str(), "--watch-history", "20", static_cast<char*>(nullptr));
      _exit(127);
    }
    return pid > 0;
  }
  void kill9() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  void term() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
};

// A TCP proxy in front of the server that can cut every connection (a network partition between
// the informer and the server) while the server itself keeps running.
class Proxy {
 public:
  explicit Proxy(int target) : target_(target) {
    listen_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::perror("proxy bind");
    ::listen(listen_, 64);
    socklen_t len = sizeof a;
    getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    std::thread([this] { acceptLoop(); }).detach();
  }
  int port() const { return port_; }
  void partition(bool cut) {
    std::lock_guard l(mu_);
    cut_ = cut;
    if (cut) {
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
  }

 private:
  void acceptLoop() {
    for (;;) {
      int c = ::accept(listen_, nullptr, nullptr);
      if (c < 0) return;
      {
        std::lock_guard l(mu_);
        if (cut_) {
          ::close(c);
          continue;
        }
      }
      int s = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(target_));
      if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(c);
        ::close(s);
        continue;
      }
      {
        std::lock_guard l(mu_);
        fds_.insert(c);
        fds_.insert(s);
      }
      std::thread([this, c, s] { pump(c, s); }).detach();
    }
  }
  void pump(int a, int b) {
    char buf[16384];
    pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    for (;;) {
      if (::poll(p, 2, 1000) < 0) break;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (p[i].revents == 0) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0 || ::write(p[1 - i].fd, buf, static_cast<size_t>(n)) != n) done = true;
      }
      if (done) break;
    }
    std::lock_guard l(mu_);
    fds_.erase(a);
    fds_.erase(b);
    ::close(a);
    ::close(b);
  }
  int target_;
  int listen_ = -1;
  int port_ = 0;
  std::mutex mu_;
  bool cut_ = false;
  std::set<int> fds_;
};

int passed = 0, failed = 0;
void check(const std::string& name, bool ok, const std::string& detail = "") {
  (ok ? passed : failed)++;
  std::cout << (ok ? "ok   " : "FAIL ") << name << (ok || detail.empty() ? "" : " " + detail) << std::endl;
}

template <class F>
bool waitFor(F f, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

const kube::ResourceRef kConfigMaps{"", "v1", "configmaps", "default", "", ""};

std::map<std::string, std::string> freshList(kube::RestClient& c) {
  std::map<std::string, std::string> out;
  kube::ListOptions lo;
  lo.labelSelector = "set=inf";
  auto l = c.listAll(kConfigMaps, lo);
  if (!l) return {{"<error>", l.status().message()}};
  for (const auto& item : (*l)["items"].GetArray()) out[kube::name(item)] = kube::resourceVersion(item);
  return out;
}

std::map<std::string, std::string> cacheOf(const kube::Informer& inf) {
  std::map<std::string, std::string> out;
  for (const auto& o : inf.list()) out[kube::name(*o)] = kube::resourceVersion(*o);
  return out;
}

bool createCm(kube::RestClient& c, const std::string& name) {
  kube::Json obj;
  obj.Parse(R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"labels":{"set":"inf"}},"data":{"v":"0"}})");
  kube::setString(obj["metadata"], "name", name, obj.GetAllocator());
  return c.create(kConfigMaps, obj).isOk();
}

bool touchCm(kube::RestClient& c, const std::string& name, int v) {
  std::string patch = R"({"data":{"v":")" + std::to_string(v) + "\"}}";
  return c.patch(kConfigMaps.withName(name), kube::PatchType::kMerge, patch).isOk();
}

int informer(int argc, char** argv) {
  ServerProcess srv;
  srv.bin = arg(argc, argv, "--foxden");
  srv.crds = arg(argc, argv, "--crds");
  srv.data = arg(argc, argv, "--work") + "/informer-data";
  srv.port = 20000 + static_cast<int>(getpid() % 20000);
  if (!srv.start()) return 2;
  std::string kubeconfig = srv.data + "/kubeconfig";
  if (!waitFor([&] { return std::ifstream(kubeconfig).good(); }, 30)) {
    std::cerr << "server did not start\n";
    return 2;
  }
  auto c = client(kubeconfig);
  if (!waitFor([&] { return c->list(kConfigMaps).isOk(); }, 30)) {
    std::cerr << "server does not answer\n";
    return 2;
  }
  for (int i = 0; i < 5; ++i) createCm(*c, "inf-" + std::to_string(i));

  kube::InformerOptions io;
  io.resource = kConfigMaps;
  io.labelSelector = "set=inf";
  io.pageSize = 2;  // paged initial list
  io.watchTimeoutSeconds = 3;  // re-watch often
  io.initialBackoff = std::chrono::milliseconds(100);
  io.maxBackoff = std::chrono::milliseconds(1000);
  Proxy proxy(srv.port);
  kube::Informer inf(client(kubeconfig, proxy.port()), io);
  std::atomic<int> adds{0}, updates{0}, deletes{0};
  inf.addEventHandler({[&](const kube::JsonPtr&) { ++adds; },
                       [&](const kube::JsonPtr&, const kube::JsonPtr&) { ++updates; },
                       [&](const kube::JsonPtr&) { ++deletes; }});
  inf.start();
  check("informer syncs", inf.waitForSync(std::chrono::seconds(30)));
  check("synced cache equals a fresh list", cacheOf(inf) == freshList(*c));
  check("initial adds delivered", adds.load() == 5, std::to_string(adds.load()));

  touchCm(*c, "inf-0", 1);
  touchCm(*c, "inf-1", 1);
  c->remove(kConfigMaps.withName("inf-2")).isOk();
  createCm(*c, "inf-5");
  check("live events reach the cache", waitFor([&] { return cacheOf(inf) == freshList(*c); }, 30));
  check("update and delete handlers ran", waitFor([&] { return updates >= 2 && deletes >= 1; }, 10));
  // Across a watch timeout (3 s) the informer re-watches from its last version without a relist.
  uint64_t lists = inf.listCount();
  std::this_thread::sleep_for(std::chrono::seconds(4));
  touchCm(*c, "inf-3", 2);
  check("re-watch after timeoutSeconds keeps the cache", waitFor([&] { return cacheOf(inf) == freshList(*c); }, 30));
  check("re-watch did not relist", inf.listCount() == lists, std::to_string(inf.listCount()));

  // Partition the informer from the server, write more than the server's watch history (20)
  // holds, heal: the informer's version is too old, it gets 410, relists, and ends equal.
  proxy.partition(true);
  for (int i = 0; i < 30; ++i) touchCm(*c, "inf-" + std::to_string(i % 2 == 0 ? 1 : 3), 100 + i);
  createCm(*c, "inf-7");
  proxy.partition(false);
  check("after a 410 the cache equals a fresh list", waitFor([&] { return cacheOf(inf) == freshList(*c); }, 60));
  check("the 410 made the informer relist", inf.listCount() > lists, std::to_string(inf.listCount()));
  lists = inf.listCount();

  // kill -9 the server and restart it; change state after the restart: the cache catches up.
  srv.kill9();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  srv.start();
  check("server restarts", waitFor([&] { return c->list(kConfigMaps).isOk(); }, 30));
  for (int i = 0; i < 25; ++i) touchCm(*c, "inf-" + std::to_string(i % 4 == 2 ? 1 : i % 4), 10 + i);
  c->remove(kConfigMaps.withName("inf-0")).isOk();
  createCm(*c, "inf-6");
  check("after a server restart the cache equals a fresh list",
        waitFor([&] { return cacheOf(inf) == freshList(*c); }, 60));
  inf.stop();
  srv.term();
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "elect") return elect(argc, argv);
  if (cmd == "informer") return informer(argc, argv);
  std::cerr << "usage: kube_driver elect|informer ...\n";
  return 2;
}
