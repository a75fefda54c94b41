// foxden-agent: the node agent. See nodeagent/README.md.
//
//   foxden-agent --kubeconfig FILE --name NAME --data-dir DIR [--label k=v]... [--enable-raw-exec]
//                [--listen HOST:PORT]
//                [--root-bind DIR]... [--rootfs-dir DIR]... [--host-volume DIR]...

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>

#include "kube/http_client.h"
#include "kube/kubeconfig.h"
#include "kube/rest_client.h"
#include "kube/signals.h"
#include "nodeagent/agent.h"
#include "nodeagent/driver/exec_driver.h"
#include "nodeagent/driver/zygote.h"

namespace {
std::atomic<bool> gStop{false};
}

int main(int argc, char** argv) {
  CLI::App app{"foxden-agent: runs the Allocations bound to this worker"};
  std::string kubeconfig;
  nodeagent::AgentOptions o;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  o.name = host;
  o.dataDir = "/var/lib/foxden-agent";
  std::vector<std::string> labels;
  std::string listen = "0.0.0.0:10250";
  app.add_option("--kubeconfig", kubeconfig, "kubeconfig (default: in-cluster service account)");
  app.add_option("--name", o.name, "Worker name")->capture_default_str();
  app.add_option("--data-dir", o.dataDir, "State, task directories and logs")->capture_default_str();
  app.add_option("--label", labels, "Worker label k=v (repeatable)");
  app.add_flag("--enable-raw-exec", o.enableRawExec, "Allow the raw_exec driver (cgroup only, no isolation)");
  app.add_option("--heartbeat-ms", o.heartbeatMillis, "Lease renewal period")->capture_default_str()->check(CLI::Range(100, 60000));
  app.add_option("--nvidia-smi", o.gpu.nvidiaSmi, "nvidia-smi to query NVIDIA GPUs with")->capture_default_str();
  app.add_option("--gpu-dev-root", o.gpu.devRoot, "Where GPU device nodes live")->capture_default_str();
  app.add_option("--gc-max-allocs", o.gc.maxAllocs, "Finished allocations' directories kept (newest first)")
      ->capture_default_str()->check(CLI::Range(0, 100000));
  app.add_option("--gc-retention-seconds", o.gc.retentionSeconds, "How long a finished allocation's directory is kept")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{10} * 365 * 86400));
  app.add_option("--gc-interval-seconds", o.gc.intervalSeconds, "How often finished allocations are collected")
      ->capture_default_str()->check(CLI::Range(1, 86400));
  app.add_option("--listen", listen, "Where the HTTPS log endpoint listens (HOST:PORT; port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--root-bind", o.rootBinds,
                 "Host directory bound read-only into exec tasks' root (repeatable; replaces the default "
                 "/bin /etc /lib /lib64 /sbin /usr)");
  app.add_option("--rootfs-dir", o.rootfsDirs,
                 "Directory rootfs tarballs may be read from (repeatable; default <data-dir>/images)");
  app.add_option("--host-volume", o.hostVolumes,
                 "Directory under which hostPath volumes are allowed (repeatable; default none)");
  app.add_flag("--trace-starts", o.traceStarts, "Log the watch-to-exec latency of every task start");
  app.add_option("--lease-duration", o.leaseDurationSeconds, "Lease duration in seconds")->capture_default_str()->check(CLI::Range(1, 3600));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (const auto& l : labels) {
    size_t eq = l.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "foxden-agent: --label must be key=value, got \"" << l << "\"\n";
      return 2;
    }
    o.labels[l.substr(0, eq)] = l.substr(eq + 1);
  }
  {
    size_t colon = listen.rfind(':');
    std::string host = colon == std::string::npos ? "" : listen.substr(0, colon);
    std::string port = colon == std::string::npos ? "" : listen.substr(colon + 1);
    if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    bool digits = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos;
    if (host.empty() || !digits || std::stoi(port) > 65535) {
      std::cerr << "foxden-agent: --listen must be HOST:PORT with a port from 0 to 65535, got \"" << listen << "\"\n";
      return 2;
    }
    o.listenHost = host;
    o.listenPort = static_cast<uint16_t>(std::stoi(port));
  }
  // Absolute, existing directories, no "." or ".." components: these are trusted host paths.
  for (auto* list : {&o.rootBinds, &o.rootfsDirs, &o.hostVolumes}) {
    for (const auto& dir : *list) {
      struct stat st;
      bool dots = ("/" + dir + "/").find("/../") != std::string::npos || ("/" + dir + "/").find("/./") != std::string::npos;
      if (dir.empty() || dir[0] != '/' || dots || ::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        std::cerr << "foxden-agent: \"" << dir << "\" must be an absolute path of an existing directory, without '.' or '..'\n";
        return 2;
      }
    }
  }
  if (o.name.empty() || o.name.size() > 253 || o.name.find('/') != std::string::npos) {
    std::cerr << "foxden-agent: invalid --name \"" << o.name << "\"\n";
    return 2;
  }
  // Before any thread or big heap exists: the zygote's clone of each task init then copies almost
  // nothing (nodeagent/driver/zygote.h).
  const int zygoteFd = nodeagent::startZygote();
  if (zygoteFd < 0) std::cerr << "foxden-agent: no zygote (" << std::strerror(errno) << "); inits are cloned by the agent\n";
  auto cfg = kubeconfig.empty() ? kube::loadInClusterConfig() : kube::loadKubeconfig(kubeconfig);
  if (!cfg) {
    std::cerr << "foxden-agent: " << cfg.status().message() << "\n";
    return 2;
  }
  // The system CA bundle is never parsed (idle RSS 20.0 -> 18.3 MiB); one thread exists here.
  kube::trustOnlyConfigCa(*cfg);
  // cpprest's pool defaults to 40 threads; the agent's traffic is a handful of requests and one
  // watch; the pool only runs I/O completions, and every thread costs resident memory and
  // hand-offs.
  kube::initHttpClientThreads(2);
  auto http = kube::newHttpClient(*cfg);
  if (!http) {
    std::cerr << "foxden-agent: " << http.status().message() << "\n";
    return 2;
  }
  // Tasks write to log files, never to pipes we own: a dying agent cannot SIGPIPE them, and we
  // must not die of SIGPIPE ourselves (ignored here).
  kube::stopOnTerminationSignals(&gStop);
  // Each agent owns its cgroup subtree and driver state, so agents (or test instances) on one
  // machine never adopt or reap each other's tasks.
  nodeagent::ExecDriverOptions eo;
  eo.cgroupParent = "foxden-" + o.name;
  eo.stateDir = o.dataDir + "/driver/exec";
  eo.traceStarts = o.traceStarts;
  eo.zygoteFd = zygoteFd;
  eo.spareCgroups = 4;  // v1: a start renames one into place (see driver/README.md)
  nodeagent::ExecDriverOptions ro = eo;
  ro.spareCgroups = o.enableRawExec ? 2 : 0;
  ro.isolate = false;
  ro.cgroupParent = "foxden-" + o.name + "-raw";
  ro.stateDir = o.dataDir + "/driver/raw";
  nodeagent::Agent agent(o, std::make_shared<kube::RestClient>(*http), nodeagent::newExecDriver(eo),
                         nodeagent::newRawExecDriver(ro));
  kube::Status st = agent.run(gStop);
  if (!st) {
    std::cerr << "foxden-agent: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
