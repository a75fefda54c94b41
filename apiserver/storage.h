#pragma once
// Storage: the control plane's durable state. Every object lives as its JSON text in SQLite (WAL,
// synchronous=FULL: a write is on disk before it is acknowledged) and in an in-memory ordered map
// that serves reads. One global, strictly increasing revision numbers every write; it becomes the
// objects' `metadata.resourceVersion`. A bounded history of recent events feeds watches; a watch
// from a revision older than the history gets 410 Gone.
//
// Keys are "<group|core>/<resource>/<namespace>/<name>" (namespace empty for cluster scope), so a
// prefix selects one resource, optionally in one namespace.
//
// Group commit (as etcd batches its raft entries): writers decide their mutations one at a time,
// each on top of the writes decided before it (committed or not), and queue them; one of the
// waiting writers commits everything queued in one SQLite transaction (one fsync), then makes it
// visible to readers and watchers in revision order and wakes the writers of what it committed, and
// the first writer of the next batch, to commit that one. A write is acknowledged
// only once its transaction is durable, and nothing is visible before that. If a transaction
// fails, its writes and every write decided after them fail (they were decided on top of them).
//
// Thread safety: all methods may be called from any thread. Decisions are serialised by writeMu_;
// committed state (the map, the revision, the history, the watchers) is guarded by mu_ (shared
// for reads). Watchers are fed under mu_, so a watch registered at revision R sees exactly the
// writes after R, in order, once each.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "kube/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace apiserver {

using Text = std::shared_ptr<const std::string>;

struct Entry {
  int64_t rv = 0;
  Text json;
};

struct Event {
  enum class Type { kAdded, kModified, kDeleted };
  Type type = Type::kAdded;
  std::string key;
  int64_t rv = 0;
  Text object;  // for kDeleted: the last state, with the deletion's revision
  Text old;     // previous state (kModified), for selector transitions
};

// One subscriber's queue. Closed when the storage stops or the subscriber falls too far behind
// (its client re-watches from the last revision it saw).
class Watcher {
 public:
  explicit Watcher(std::string prefix, size_t maxQueue) : prefix_(std::move(prefix)), maxQueue_(maxQueue) {}
  // Waits up to `timeout` for events; moves them into `out`. Returns false once closed and drained.
  bool next(std::vector<Event>& out, std::chrono::milliseconds timeout);
  void close();
  bool closed() const;
  const std::string& prefix() const { return prefix_; }

 private:
  friend class Storage;
  // Queues the events of [first, last) under prefix_, waking the subscriber once (a commit's
  // events arrive together, so it wakes once per commit, not once per event).
  template <typename It>
  void push(It first, It last);
  const std::string prefix_;
  const size_t maxQueue_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> queue_;  // guarded by mu_
  bool closed_ = false;      // guarded by mu_
};
using WatcherPtr = std::shared_ptr<Watcher>;

// Paces a watcher's consumer under a stream of events: when events arrive less than one window
// after the previous ones, it waits one window so that the next ones are taken in the same
// wake-up. A quiet watcher (events further apart) is never delayed.
class StreamPacer {
 public:
  explicit StreamPacer(std::chrono::microseconds window) : window_(window) {}
  // Call when events have arrived. True if it waited (more events may have queued meanwhile).
  bool pace();

 private:
  const std::chrono::microseconds window_;
  std::chrono::steady_clock::time_point last_{};
};

// What a mutation decides, given the current entry.
struct Mutation {
  enum class Kind { kWrite, kDelete, kNoChange };
  Kind kind = Kind::kNoChange;
  // kWrite: the new object's text (already carrying the new revision); kDelete: optionally the
  // last state stamped with the deletion's revision, for the DELETED event.
  std::string json;
  static Mutation write(std::string j) { return {Kind::kWrite, std::move(j)}; }
  static Mutation remove(std::string last = {}) { return {Kind::kDelete, std::move(last)}; }
  static Mutation noChange() { return {Kind::kNoChange, {}}; }
};

class Storage {
 public:
  ~Storage();
  static kube::StatusOr<std::unique_ptr<Storage>> open(const std::string& path,
                                                       size_t historySize = 10000);

  int64_t currentRv() const;
  std::optional<Entry> get(const std::string& key) const;
  // Entries under `prefix` with keys > startAfter, in key order; at most `limit` (0: all).
  std::vector<std::pair<std::string, Entry>> list(const std::string& prefix,
                                                   const std::string& startAfter = "",
                                                   size_t limit = 0, int64_t* rvOut = nullptr) const;
  size_t count() const;

  // Atomic read-modify-write of one key. `fn` gets the key's newest decided state (nullptr if
  // absent; possibly a write still waiting for its commit) and the revision this write will carry;
  // it must not call back into Storage. Returns once the write is durable: the stored entry (json
  // null after a delete; the current entry on kNoChange, once that entry is durable too).
  using Mutator = std::function<kube::StatusOr<Mutation>(const Entry* current, int64_t newRv)>;
  kube::StatusOr<Entry> mutate(const std::string& key, const Mutator& fn);

  // Subscribes to events under `prefix` after revision `fromRv`; 410 if the history no longer
  // reaches back that far.
  kube::StatusOr<WatcherPtr> watch(const std::string& prefix, int64_t fromRv,
                                   size_t maxQueue = 100000);
  // Closes every watcher (shutdown).
  void closeWatchers();
  int64_t oldestWatchableRv() const;

 private:
  Storage() = default;
  kube::Status exec(const char* sql);
  // Records a commit's events in the history and hands them to the watchers. With mu_.
  void broadcast(std::span<const Event> events);

  // One decided write waiting for (or done with) its commit.
  struct Pending {
    std::string key;
    int64_t rv = 0;
    bool remove = false;
    Text json;          // kWrite: the new text; kDelete: the DELETED event's object
    Text old;           // previous state, for the event
    bool done = false;  // guarded by writeMu_
    kube::Status status;
    // Its writer (and any writer whose answer waits for it) sleeps here, with writeMu_: woken when
    // it is done, or when it heads the queue and the committer before it finished.
    std::condition_variable cv;
  };
  using PendingPtr = std::shared_ptr<Pending>;
  // Commits `batch` in one transaction and publishes it. Called without writeMu_.
  kube::Status commit(const std::vector<PendingPtr>& batch);
  // Waits (holding `l` on writeMu_) until `p` is done, committing batches while nobody else is.
  void awaitCommit(std::unique_lock<std::mutex>& l, const PendingPtr& p);

  mutable std::shared_mutex mu_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* upsert_ = nullptr;
  sqlite3_stmt* delete_ = nullptr;
  sqlite3_stmt* setRv_ = nullptr;
  std::map<std::string, Entry> objects_;  // guarded by mu_
  int64_t rv_ = 0;                        // guarded by mu_
  std::deque<Event> history_;             // guarded by mu_
  size_t historySize_ = 10000;
  int64_t historyStartRv_ = 0;            // events with rv > this are all in history_
  std::vector<std::weak_ptr<Watcher>> watchers_;  // guarded by mu_

  std::mutex writeMu_;
  int64_t decidedRv_ = 0;                          // guarded by writeMu_: the last revision handed out
  std::vector<PendingPtr> queue_;                  // guarded by writeMu_: decided, not yet committing
  std::map<std::string, PendingPtr> pending_;      // guarded by writeMu_: newest uncommitted write per key
  bool committing_ = false;                        // guarded by writeMu_: a writer is running commit()
};

}  // namespace apiserver
