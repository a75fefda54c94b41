#include "apiserver/storage.h"

#include <sqlite3.h>

#include <algorithm>
#include <thread>

namespace apiserver {

bool Watcher::next(std::vector<Event>& out, std::chrono::milliseconds timeout) {
  std::unique_lock l(mu_);
  cv_.wait_for(l, timeout, [this] { return !queue_.empty() || closed_; });
  while (!queue_.empty()) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return !(closed_ && out.empty());
}

void Watcher::close() {
  std::lock_guard l(mu_);
  closed_ = true;
  cv_.notify_all();
}

bool Watcher::closed() const {
  std::lock_guard l(mu_);
  return closed_;
}

template <typename It>
void Watcher::push(It first, It last) {
  std::lock_guard l(mu_);
  if (closed_) return;
  bool wasEmpty = queue_.empty();
  for (; first != last; ++first) {
    const Event& e = *first;
    if (e.key.compare(0, prefix_.size(), prefix_) != 0) continue;
    if (queue_.size() >= maxQueue_) {
      // Too slow a consumer: end its watch rather than grow without bound.
      closed_ = true;
      cv_.notify_all();
      return;
    }
    queue_.push_back(e);
  }
  // The subscriber sleeps only on an empty queue: a queue that was not empty needs no wake-up.
  if (wasEmpty && !queue_.empty()) cv_.notify_all();
}

bool StreamPacer::pace() {
  auto now = std::chrono::steady_clock::now();
  bool streaming = now - last_ < window_;
  last_ = now;
  if (streaming) std::this_thread::sleep_for(window_);
  return streaming;
}

Storage::~Storage() {
  closeWatchers();
  sqlite3_finalize(upsert_);
  sqlite3_finalize(delete_);
  sqlite3_finalize(setRv_);
  if (db_ != nullptr) sqlite3_close(db_);
}

kube::Status Storage::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err != nullptr ? err : "unknown";
    sqlite3_free(err);
    return kube::Status::internal(std::string("sqlite: ") + m + " (in: " + sql + ")");
  }
  return kube::Status::ok();
}

kube::StatusOr<std::unique_ptr<Storage>> Storage::open(const std::string& path,
                                                       size_t historySize) {
  std::unique_ptr<Storage> s(new Storage());
  s->historySize_ = historySize;
  if (sqlite3_open(path.c_str(), &s->db_) != SQLITE_OK) {
    return kube::Status::internal("cannot open " + path + ": " + sqlite3_errmsg(s->db_));
  }
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           "PRAGMA synchronous=FULL",
           "PRAGMA busy_timeout=5000",
           "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, rv INTEGER NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
           "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
           "INSERT OR IGNORE INTO meta(name, value) VALUES ('rv', 0)",
       }) {
    kube::Status st = s->exec(sql);
    if (!st) return st;
  }
  auto prepare = [&](const char* sql, sqlite3_stmt** out) {
    return sqlite3_prepare_v2(s->db_, sql, -1, out, nullptr) == SQLITE_OK;
  };
  if (!prepare("INSERT INTO objects(key, rv, value) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO "
               "UPDATE SET rv = excluded.rv, value = excluded.value",
               &s->upsert_) ||
      !prepare("DELETE FROM objects WHERE key = ?1", &s->delete_) ||
      !prepare("UPDATE meta SET value = ?1 WHERE name = 'rv'", &s->setRv_)) {
    return kube::Status::internal(std::string("sqlite prepare: ") + sqlite3_errmsg(s->db_));
  }
  sqlite3_stmt* q = nullptr;
  if (prepare("SELECT value FROM meta WHERE name = 'rv'", &q) && sqlite3_step(q) == SQLITE_ROW) {
    s->rv_ = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  if (prepare("SELECT key, rv, value FROM objects", &q)) {
    while (sqlite3_step(q) == SQLITE_ROW) {
      std::string key(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)));
      int64_t rv = sqlite3_column_int64(q, 1);
      auto* data = static_cast<const char*>(sqlite3_column_blob(q, 2));
      int n = sqlite3_column_bytes(q, 2);
      s->objects_[key] = Entry{rv, std::make_shared<const std::string>(data, n)};
      s->rv_ = std::max(s->rv_, rv);
    }
  }
  sqlite3_finalize(q);
  s->historyStartRv_ = s->rv_;
  s->decidedRv_ = s->rv_;
  return s;
}

int64_t Storage::currentRv() const {
  std::shared_lock l(mu_);
  return rv_;
}

int64_t Storage::oldestWatchableRv() const {
  std::shared_lock l(mu_);
  return historyStartRv_;
}

std::optional<Entry> Storage::get(const std::string& key) const {
  std::shared_lock l(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::pair<std::string, Entry>> Storage::list(const std::string& prefix,
                                                          const std::string& startAfter,
                                                          size_t limit, int64_t* rvOut) const {
  std::shared_lock l(mu_);
  if (rvOut != nullptr) *rvOut = rv_;
  std::vector<std::pair<std::string, Entry>> out;
  auto it = startAfter.empty() ? objects_.lower_bound(prefix) : objects_.upper_bound(startAfter);
  for (; it != objects_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    out.emplace_back(it->first, it->second);
    if (limit != 0 && out.size() >= limit) break;
  }
  return out;
}

size_t Storage::count() const {
  std::shared_lock l(mu_);
  return objects_.size();
}

kube::StatusOr<Entry> Storage::mutate(const std::string& key, const Mutator& fn) {
  std::unique_lock w(writeMu_);
  // The current state is the newest decided write of this key, committed or not.
  Entry curEntry;
  const Entry* cur = nullptr;
  PendingPtr before;
  if (auto p = pending_.find(key); p != pending_.end()) {
    before = p->second;
    if (!before->remove) {
      curEntry = Entry{before->rv, before->json};
      cur = &curEntry;
    }
  } else {
    std::shared_lock l(mu_);
    if (auto it = objects_.find(key); it != objects_.end()) {
      curEntry = it->second;
      cur = &curEntry;
    }
  }
  int64_t newRv = decidedRv_ + 1;
  auto decided = fn(cur, newRv);
  if (!decided) return decided.status();
  Mutation& m = *decided;
  if (m.kind == Mutation::Kind::kNoChange || (m.kind == Mutation::Kind::kDelete && cur == nullptr)) {
    // Reported state must be durable: wait for the write this answer is based on.
    if (before) {
      awaitCommit(w, before);
      if (!before->status) return before->status;
    }
    return m.kind == Mutation::Kind::kNoChange && cur != nullptr ? curEntry : Entry{};
  }
  auto p = std::make_shared<Pending>();
  p->key = key;
  p->rv = newRv;
  p->remove = m.kind == Mutation::Kind::kDelete;
  p->old = cur != nullptr ? curEntry.json : nullptr;
  if (p->remove) {
    // The last state as the mutator stamped it with the deletion's revision, as etcd reports it.
    p->json = m.json.empty() ? curEntry.json : std::make_shared<const std::string>(std::move(m.json));
  } else {
    p->json = std::make_shared<const std::string>(std::move(m.json));
  }
  decidedRv_ = newRv;
  queue_.push_back(p);
  pending_[key] = p;
  awaitCommit(w, p);
  if (!p->status) return p->status;
  return p->remove ? Entry{} : Entry{p->rv, p->json};
}

void Storage::awaitCommit(std::unique_lock<std::mutex>& w, const PendingPtr& p) {
  while (!p->done) {
    if (committing_) {
      p->cv.wait(w);
      continue;
    }
    // Nobody is committing: this writer commits everything queued so far (its own write
    // included), while later writers queue up behind for the next transaction.
    committing_ = true;
    std::vector<PendingPtr> batch;
    batch.swap(queue_);
    w.unlock();
    kube::Status st = commit(batch);
    w.lock();
    for (const auto& q : batch) {
      q->done = true;
      q->status = st;
      if (auto it = pending_.find(q->key); it != pending_.end() && it->second == q) pending_.erase(it);
      q->cv.notify_all();
    }
    if (!st) {
      // Everything decided after the failed writes was decided on top of them.
      for (const auto& q : queue_) {
        q->done = true;
        q->status = st;
        q->cv.notify_all();
      }
      queue_.clear();
      pending_.clear();
      std::shared_lock l(mu_);
      decidedRv_ = rv_;
    }
    committing_ = false;
    // Wake only the writer of the next batch's first write, to commit it: the others sleep on
    // until their own write is done (notifying every waiter made all of the next batch's writers
    // wake and sleep again once per commit).
    if (!queue_.empty()) queue_.front()->cv.notify_all();
  }
}

kube::Status Storage::commit(const std::vector<PendingPtr>& batch) {
  if (batch.empty()) return kube::Status::ok();
  // Durable first: nothing is visible until SQLite has committed.
  kube::Status st = exec("BEGIN IMMEDIATE");
  if (!st) return st;
  bool ok = true;
  for (const auto& p : batch) {
    if (!p->remove) {
      sqlite3_bind_text(upsert_, 1, p->key.data(), static_cast<int>(p->key.size()), SQLITE_STATIC);
      sqlite3_bind_int64(upsert_, 2, p->rv);
      sqlite3_bind_blob(upsert_, 3, p->json->data(), static_cast<int>(p->json->size()), SQLITE_STATIC);
      ok = sqlite3_step(upsert_) == SQLITE_DONE;
      sqlite3_reset(upsert_);
    } else {
      sqlite3_bind_text(delete_, 1, p->key.data(), static_cast<int>(p->key.size()), SQLITE_STATIC);
      ok = sqlite3_step(delete_) == SQLITE_DONE;
      sqlite3_reset(delete_);
    }
    if (!ok) break;
  }
  if (ok) {
    sqlite3_bind_int64(setRv_, 1, batch.back()->rv);
    ok = sqlite3_step(setRv_) == SQLITE_DONE;
    sqlite3_reset(setRv_);
  }
  if (!ok) {
    std::string msg = sqlite3_errmsg(db_);
    (void)exec("ROLLBACK");
    return kube::Status::internal("storage write failed: " + msg);
  }
  st = exec("COMMIT");
  if (!st) {
    (void)exec("ROLLBACK");
    return st;
  }

  std::vector<Event> events;
  events.reserve(batch.size());
  std::unique_lock l(mu_);
  for (const auto& p : batch) {
    Event& e = events.emplace_back();
    e.key = p->key;
    e.rv = p->rv;
    e.object = p->json;
    e.old = p->old;
    if (p->remove) {
      e.type = Event::Type::kDeleted;
      objects_.erase(p->key);
    } else {
      auto [it, inserted] = objects_.insert_or_assign(p->key, Entry{p->rv, p->json});
      e.type = inserted ? Event::Type::kAdded : Event::Type::kModified;
    }
  }
  rv_ = batch.back()->rv;
  broadcast(events);
  return kube::Status::ok();
}

void Storage::broadcast(std::span<const Event> events) {
  history_.insert(history_.end(), events.begin(), events.end());
  while (history_.size() > historySize_) {
    historyStartRv_ = history_.front().rv;
    history_.pop_front();
  }
  bool prune = false;
  for (auto& w : watchers_) {
    auto s = w.lock();
    if (!s) {
      prune = true;
      continue;
    }
    s->push(events.begin(), events.end());
  }
  if (prune) {
    std::erase_if(watchers_, [](const std::weak_ptr<Watcher>& w) { return w.expired(); });
  }
}

kube::StatusOr<WatcherPtr> Storage::watch(const std::string& prefix, int64_t fromRv,
                                          size_t maxQueue) {
  std::unique_lock l(mu_);
  if (fromRv < historyStartRv_) {
    return kube::Status::gone("too old resource version: " + std::to_string(fromRv) + " (" +
                              std::to_string(historyStartRv_ + 1) + ")");
  }
  auto w = std::make_shared<Watcher>(prefix, maxQueue);
  // The history is in revision order: replay what follows fromRv.
  auto from = std::upper_bound(history_.begin(), history_.end(), fromRv,
                               [](int64_t rv, const Event& e) { return rv < e.rv; });
  w->push(from, history_.end());
  watchers_.push_back(w);
  return w;
}

void Storage::closeWatchers() {
  std::unique_lock l(mu_);
  for (auto& w : watchers_) {
    if (auto s = w.lock()) s->close();
  }
  watchers_.clear();
}

}  // namespace apiserver
