#pragma once
// Names the calling thread, as `top -H`, `ps -L`, perf (`--sort comm`) and gdb show it. Linux
// keeps 15 bytes of a name; longer ones are cut.
#include <pthread.h>

#include <string>
#include <string_view>

namespace kube {

inline void nameThread(std::string_view name) {
  std::string n(name.substr(0, 15));
  (void)pthread_setname_np(pthread_self(), n.c_str());
}

}  // namespace kube
