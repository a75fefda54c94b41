// `foxden`: the command-line entry point. Subcommands: server (the embedded control plane),
// token create (a worker's kubeconfig), logs (a task's output, cli/logs.h), version.

#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "apiserver/server.h"
#include "cli/logs.h"
#include "kube/http_client.h"
#include "kube/kubeconfig.h"
#include "kube/rest_client.h"

namespace {

#ifndef FOXDEN_VERSION
#define FOXDEN_VERSION "dev"
#endif

bool splitHostPort(const std::string& hp, std::string& host, uint16_t& port, std::string& err) {
  size_t colon = hp.rfind(':');
  if (colon == std::string::npos) {
    err = "--listen must be HOST:PORT, got \"" + hp + "\"";
    return false;
  }
  host = hp.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string p = hp.substr(colon + 1);
  try {
    size_t used = 0;
    long v = std::stol(p, &used);
    if (used != p.size() || v < 0 || v > 65535) throw std::out_of_range("port");
    port = static_cast<uint16_t>(v);
  } catch (const std::exception&) {
    err = "--listen: invalid port \"" + p + "\"";
    return false;
  }
  if (host.empty()) {
    err = "--listen: missing host in \"" + hp + "\"";
    return false;
  }
  return true;
}

int runServer(const apiserver::ServerOptions& o) {
  // Block the signals we wait for before any thread starts, so only sigwait() receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  auto s = apiserver::Server::start(o);
  if (!s) {
    std::cerr << "foxden server: " << s.status().message() << "\n";
    return 1;
  }
  std::cerr << "foxden server: serving the Kubernetes API on https://" << o.host << ":" << (*s)->port()
            << " (data in " << o.dataDir << ", kubeconfig " << (*s)->kubeconfigPath() << ")\n";
  int sig = 0;
  sigwait(&set, &sig);
  std::cerr << "foxden server: signal " << sig << ", shutting down\n";
  (*s)->stop();
  return 0;
}

int tokenCreate(const std::string& worker, const std::string& kubeconfig) {
  auto cfg = kube::loadKubeconfig(kubeconfig);
  if (!cfg) {
    std::cerr << "foxden token create: " << cfg.status().message() << "\n";
    return 1;
  }
  auto http = kube::newHttpClient(*cfg);
  if (!http) {
    std::cerr << "foxden token create: " << http.status().message() << "\n";
    return 1;
  }
  kube::RestClient client(*http);
  std::string secret = apiserver::randomSuffix(32);
  std::string token = "fxw." + worker + "." + secret;
  kube::Json obj;
  obj.Parse(R"({"apiVersion":"v1","kind":"Secret","type":"foxden.io/worker-token","metadata":{"namespace":"foxden-system","labels":{"foxden.io/worker":""}},"data":{}})");
  auto& a = obj.GetAllocator();
  kube::setString(obj["metadata"], "name", apiserver::Authenticator::workerTokenSecretName(worker), a);
  kube::setString(obj["metadata"]["labels"], "foxden.io/worker", worker, a);
  kube::setString(obj["data"], "token", kube::base64Encode(token), a);
  kube::setString(obj["data"], "worker", kube::base64Encode(worker), a);
  kube::ResourceRef ref{"", "v1", "secrets", "foxden-system", "", ""};
  auto created = client.create(ref, obj);
  if (!created && created.status().code() == 409) {
    // Rotate: replace the stored token.
    auto updated = client.update(ref.withName(apiserver::Authenticator::workerTokenSecretName(worker)), obj);
    if (!updated) {
      std::cerr << "foxden token create: " << updated.status().message() << "\n";
      return 1;
    }
  } else if (!created) {
    std::cerr << "foxden token create: " << created.status().message() << "\n";
    return 1;
  }
  kube::RestConfig wc = *cfg;
  wc.bearerToken = token;
  wc.clientCertPem.clear();
  wc.clientKeyPem.clear();
  std::cout << kube::renderKubeconfig(wc, "worker-" + worker, "foxden");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Foxden: bare-metal and GPU orchestration through the Kubernetes API"};
  app.require_subcommand(1);

  apiserver::ServerOptions so;
  std::string listen = "127.0.0.1:6443";
  auto* server = app.add_subcommand("server", "Run the embedded single-machine control plane (one machine; a real cluster is the answer at scale)");
  server->add_option("--data-dir", so.dataDir, "State directory (SQLite store, PKI, kubeconfig)")->capture_default_str();
  server->add_option("--listen", listen, "HOST:PORT to serve HTTPS on (port 0: any free port)")->capture_default_str();
  server->add_option("--crds", so.crdsDir, "Directory of CustomResourceDefinition YAML files to install at start");
  server->add_option("--watch-history", so.historySize, "Watch events kept for resumption")->capture_default_str()->check(CLI::Range(size_t{1}, size_t{10000000}));
  server->add_option("--bookmark-interval", so.bookmarkIntervalSeconds, "Seconds between watch bookmarks")->capture_default_str()->check(CLI::Range(1, 3600));
  server->add_option("--max-body-bytes", so.maxBodyBytes, "Largest request body accepted")->capture_default_str()->check(CLI::Range(size_t{1024}, size_t{1} << 30));

  auto* token = app.add_subcommand("token", "Manage worker tokens");
  token->require_subcommand(1);
  std::string worker, kubeconfig;
  auto* create = token->add_subcommand("create", "Create a worker token and print its kubeconfig");
  create->add_option("--worker", worker, "Worker name")->required();
  create->add_option("--kubeconfig", kubeconfig, "Admin kubeconfig")->required();

  cli::LogsOptions lo;
  int64_t tail = -1;
  auto* logs = app.add_subcommand("logs", "Print a task's stdout (or stderr) from the agent that runs it");
  logs->add_option("allocation", lo.allocation, "Allocation name")->required();
  logs->add_option("-n,--namespace", lo.ns, "Namespace (default: the kubeconfig context's)");
  logs->add_option("--task", lo.task, "Task name (may be omitted when the allocation has one task)");
  logs->add_flag("-f,--follow", lo.follow, "Keep streaming new output, across rotations and agent restarts");
  auto* tailOpt = logs->add_option("--tail", tail, "Only the last N lines");
  logs->add_flag("--stderr", lo.stderrStream, "Read stderr instead of stdout");
  logs->add_option("--kubeconfig", lo.kubeconfig, "kubeconfig (default: $KUBECONFIG, then ~/.kube/config)");

  auto* version = app.add_subcommand("version", "Print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (*server) {
    std::string err;
    if (!splitHostPort(listen, so.host, so.port, err)) {
      std::cerr << "foxden server: " << err << "\n";
      return 2;
    }
    return runServer(so);
  }
  if (*create) {
    std::string e = apiserver::validateDnsSubdomain(worker);
    if (!e.empty()) {
      std::cerr << "foxden token create: invalid worker name \"" << worker << "\": " << e << "\n";
      return 2;
    }
    return tokenCreate(worker, kubeconfig);
  }
  if (*logs) {
    if (tailOpt->count() > 0) lo.tail = tail;
    signal(SIGPIPE, SIG_IGN);  // `foxden logs ... | head` ends on a write error, not a signal
    return cli::runLogs(lo);
  }
  if (*version) {
    std::cout << "foxden " << FOXDEN_VERSION << "\n";
    return 0;
  }
  return 0;
}
