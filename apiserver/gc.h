#pragma once
// The server's own controllers, run on one background thread: owner-reference garbage collection
// (background, foreground and orphan propagation), finalizer bookkeeping for foregroundDeletion
// and orphan, and namespace termination (delete the contents, then finalize the namespace).
//
// Shaped like kube-controller-manager's garbage collector: a graph of every object's uid, owners
// and dependents, kept current by a watch on the whole store, and a set of "dirty" uids whose
// situation changed. Only dirty objects are looked at, so a write costs one parse of that object,
// not a walk of the store (a full walk on every write made 5,000 allocations cost seconds of CPU).
// The graph is built from a list at start and again whenever the watch is closed (the collector
// fell behind the history): a rebuild marks everything that could need work dirty.
//
// The collector's own writes (deletes, finalizer and ownerReference removals) come back through
// the watch and move the cascade along. A write that fails for another reason than NotFound or
// Conflict is retried about a second later.
//
// Threads: one (`run`); stop() may be called from any thread.

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "apiserver/api.h"
#include "apiserver/storage.h"

namespace apiserver {

class GarbageCollector {
 public:
  GarbageCollector(Storage& storage, Registry& registry, Api& api)
      : storage_(storage), registry_(registry), api_(api) {}
  ~GarbageCollector() { stop(); }
  void start();
  void stop();
  // Synchronously: brings the graph up to date with the store, then handles every dirty object
  // once. Returns how many writes it made. For tests; not to be called while the thread runs.
  size_t pass();

 private:
  struct Node {
    std::string key;  // storage key
    ResourceTypePtr rt;
    std::string ns, name;
    int64_t rv = 0;
    std::vector<std::string> owners;  // owner uids
    bool deleting = false;            // metadata.deletionTimestamp set
    bool orphan = false;              // finalizer "orphan"
    bool foreground = false;          // finalizer "foregroundDeletion"
    bool isNamespace = false;
  };

  void run();
  void rebuild();                 // list + watch; everything that may need work becomes dirty
  // Applies queued watch events (counted into *applied if given); false once the watch is closed.
  bool drain(int timeoutMs, size_t* applied = nullptr);
  void apply(const Event& e);
  void upsert(const std::string& key, int64_t rv, const std::string& json);
  void erase(const std::string& key, int64_t rv);
  void unlink(const std::string& uid, const Node& n);
  const Node* deletingNamespace(const std::string& name) const;  // nullptr: absent or not deleting
  size_t processDirty();
  size_t processObject(const std::string& uid);
  size_t processNamespace(const std::string& name);
  // The writes of one look at an object or a namespace: those that succeeded, and whether one
  // failed in a way worth a retry.
  struct Tally {
    size_t writes = 0;
    bool failed = false;
    void count(const kube::Status& st);
  };
  // Deletes with `policy` each of `uids` still known and not being deleted already, each on the
  // condition that its uid is unchanged (never a namesake created since).
  void deleteEach(const std::unordered_set<std::string>& uids, const char* policy, Tally& tally);

  Storage& storage_;
  Registry& registry_;
  Api& api_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex watcherMu_;  // guards replacing watcher_ against stop() closing it
  WatcherPtr watcher_;    // replaced by the collector's thread only

  // The graph; touched by the collector's thread only.
  std::unordered_map<std::string, Node> nodes_;                                   // uid -> node
  std::unordered_map<std::string, std::string> uidOfKey_;                         // key -> uid
  std::unordered_map<std::string, std::unordered_set<std::string>> dependents_;   // owner uid -> uids
  std::unordered_map<std::string, std::unordered_set<std::string>> members_;      // namespace -> uids
  std::set<std::string> dirty_;            // uids to look at
  std::set<std::string> dirtyNamespaces_;  // names of namespaces to look at
  std::set<std::string> retry_;            // uids whose writes failed
  std::set<std::string> retryNamespaces_;  // namespaces whose writes failed
};

}  // namespace apiserver
