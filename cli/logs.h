#pragma once
// `foxden logs ALLOC [-n NS] [--task T] [-f] [--tail N] [--stderr] [--kubeconfig F]`: reads a
// task's logs from the agent that runs it.
//
//   kubeconfig ─► API: Allocation NS/ALLOC ─► spec.workerName ─► Worker status.agentEndpoint
//   ─► HTTPS to the agent (certificate pinned to agentEndpoint.certificateSHA256, the API token as
//      bearer) ─► GET /logs/NS/ALLOC/TASK?frames=true ─► stdout
//
// With -f the stream is framed (each frame names its cursor), so after the agent goes away the
// command reconnects with backoff (re-reading the Worker's endpoint) and resumes at the exact next
// byte: nothing repeated, nothing lost while the files still hold it.

#include <cstdint>
#include <optional>
#include <string>

namespace cli {

struct LogsOptions {
  std::string allocation;
  std::string ns;          // empty: the kubeconfig context's namespace
  std::string task;        // empty: the allocation's only task
  bool follow = false;
  std::optional<int64_t> tail;
  bool stderrStream = false;
  std::string kubeconfig;  // empty: $KUBECONFIG (first file), then ~/.kube/config
};

// Returns the process exit status; errors are printed to stderr.
int runLogs(const LogsOptions& options);

}  // namespace cli
