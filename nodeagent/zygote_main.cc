// foxden-zygote: the process that clones task inits for foxden-agent (nodeagent/driver/zygote.h).
// The agent forks and execs it at startup, with its end of a socketpair as fd 3. Linked statically
// and with nothing but the init's code, so each clone of an init copies a small address space.
//   foxden-zygote 3 AGENT_PID      (started by foxden-agent only)

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "nodeagent/driver/zygote.h"

int main(int argc, char** argv) {
  char* end = nullptr;
  long fd = argc == 3 ? std::strtol(argv[1], &end, 10) : -1;
  bool fdOk = end != nullptr && *end == '\0' && fd >= 0 && fd < 1024;
  long agent = argc == 3 ? std::strtol(argv[2], &end, 10) : -1;
  if (!fdOk || *end != '\0' || agent <= 1 || getppid() != static_cast<pid_t>(agent)) {
    std::fputs("foxden-zygote: started by foxden-agent only (usage: foxden-zygote FD AGENT_PID)\n", stderr);
    return 2;
  }
  nodeagent::runZygote(static_cast<int>(fd), static_cast<pid_t>(agent));
}
