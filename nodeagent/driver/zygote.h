#pragma once
// Cloning task inits, directly or through the zygote.
//
// clone() without CLONE_VM copies the caller's page tables: in the agent (a multi-threaded
// cpprestsdk process with hundreds of task-runner threads) that was the biggest part of a start.
// The zygote is a single-threaded process forked from foxden-agent's main() before any thread or
// big heap exists; the agent sends it each start's InitSpec (serialised, fds by SCM_RIGHTS) over a
// socketpair and it clones the init with CLONE_PARENT, so the init is the agent's child exactly as
// if the agent had cloned it (waitpid, SIGCHLD), and copies the zygote's small address space only.
// The zygote dies with the agent (PR_SET_PDEATHSIG); the inits do not (the signal is not inherited).

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "nodeagent/driver/task_init.h"

namespace nodeagent {

struct SpawnResult {
  pid_t pid = -1;
  int err = 0;            // errno of a failed clone
  bool inCgroup = false;  // created inside its cgroup (v2 clone3) or joins it itself (v1)
  bool awaitsGo = false;  // the init waits for the caller's go byte (InitSpec::awaitGo)
};

// Clones an init running `spec` with `nsFlags`. cgroupFd >= 0 (cgroup v2): clone3 with
// CLONE_INTO_CGROUP first (the init then awaits no go), plain clone (and an attach by the caller,
// then its go) where the kernel lacks it.
// cloneParent: CLONE_PARENT, the init becomes the caller's parent's child (used by the zygote).
SpawnResult spawnInit(const init::InitSpec& spec, uint64_t nsFlags, int cgroupFd, bool cloneParent);

// Starts the zygote; call while the process has a single thread. It forks, and the child execs
// `binary` (the small static `foxden-zygote`) if there is one, or serves from the fork (a copy of
// the agent: a clone from it copies ~100 mappings and ~1 MiB of the libraries' relocated data, a
// clone from foxden-zygote a tenth of that; every init is then that much smaller too). Returns the
// agent's end of its socket (O_CLOEXEC), or -1 if it could not be started (starts then clone from
// the agent); its pid in *pid if given.
//
// `foxden-zygote` next to this process's executable, or "" if there is none.
std::string defaultZygoteBinary();
int startZygote(pid_t* pid = nullptr, const std::string& binary = defaultZygoteBinary());
// foxden-zygote's main: serves requests on `sock` until the agent `agent` goes away.
[[noreturn]] void runZygote(int sock, pid_t agent);

// Has the zygote behind `zygoteFd` clone an init for `spec`; the fds named in spec (and cgroupFd,
// traceFd: a 4 KiB memfd the init's trace marks go to, or -1) are the caller's and stay open.
// nullopt: the zygote is unusable (gone, or the spec too big to send); the caller clones itself.
// Requests are serialised by a process-wide lock.
std::optional<SpawnResult> zygoteSpawn(int zygoteFd, const init::InitSpec& spec, uint64_t nsFlags, int cgroupFd,
                                       int traceFd);

}  // namespace nodeagent
