#pragma once
// FakeApiServer: a tiny in-memory stand-in for kube-apiserver, for client tests only. It is a
// fake: one global resourceVersion counter, JSON merge patch for every patch type, no validation.
// It serves on kube::startHttpServer (plain HTTP, port 0):
//   GET    collection (labelSelector, limit/continue), GET object
//   GET    collection?watch=true  (events after resourceVersion; ERROR 410 or HTTP 410 once the
//          history was compacted; ends when timeoutSeconds pass or endWatches() is called)
//   POST / PUT (resourceVersion conflicts -> 409) / PATCH / DELETE (preconditions), "/status".
// Every request is recorded so tests can assert on what the client sent.
//
// Threads: the HttpServer's connection threads run the handler; the store is guarded by mu_.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kube/http_server.h"
#include "kube/json.h"
#include "kube/labels.h"

namespace kube::testing {

struct RecordedRequest {
  std::string method;
  std::string path;
  std::string query;
  std::string contentType;
  std::string authorization;
  std::string body;
};

class FakeApiServer {
 public:
  FakeApiServer();
  ~FakeApiServer();

  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  // Stores an object directly (as if created or updated); returns its resourceVersion. With
  // emit=false no watch event is recorded (a change that watchers "missed").
  std::string put(const std::string& collectionPath, Json obj, bool emit = true);
  // Deletes directly.
  void erase(const std::string& collectionPath, const std::string& ns, const std::string& name,
             bool emit = true);
  JsonPtr object(const std::string& collectionPath, const std::string& ns, const std::string& name) const;
  // Forgets the event history: every resourceVersion seen so far becomes too old (410 Gone), and
  // open watches end (with an ERROR 410 event in error-event mode).
  void compact();
  // Wraps the 410 of an expired watch in a 200 stream ERROR event (true, like a real server for
  // established watches) or returns HTTP 410 (false).
  void setExpiredAsErrorEvent(bool v);
  // Ends every open watch stream (clients re-watch).
  void endWatches();
  // Sends a BOOKMARK with the current resourceVersion to every open watch.
  void bookmark();
  // Makes the next `n` requests matching `method` fail with `code`.
  void failNext(const std::string& method, int n, int code);

  std::vector<RecordedRequest> requests() const;
  int countRequests(const std::string& method, const std::string& query_contains = "") const;
  int openWatches() const;
  // Waits (up to `timeout`) until pred() holds. Re-checks whenever the fake's state changes or a
  // request arrives, and at least every 10 ms for conditions on the client side.
  template <class Pred>
  bool waitFor(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (pred()) return true;
      std::unique_lock<std::mutex> l(mu_);
      if (std::chrono::steady_clock::now() >= deadline) return false;
      cv_.wait_for(l, std::chrono::milliseconds(10));
    }
  }

 private:
  struct Event {
    int64_t rv;
    std::string collection;
    std::string type;
    std::string object;  // serialized
  };
  void handle(const ServerRequest& req, ResponseWriter& w);
  void serveWatch(const std::string& collection, const ServerRequest& req, ResponseWriter& w);
  void emitLocked(const std::string& collection, const std::string& type, const Json& obj);
  void touch() { cv_.notify_all(); }

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::map<std::string, std::map<std::string, Json>> store_;  // collection -> "ns/name" -> object
  std::vector<Event> events_;
  int64_t rv_ = 100;
  int64_t compactedThrough_ = 0;
  bool expiredAsErrorEvent_ = true;
  int watchGeneration_ = 0;
  int bookmarkGeneration_ = 0;
  int compactGeneration_ = 0;
  int openWatches_ = 0;
  bool stopping_ = false;
  std::string failMethod_;
  int failCount_ = 0;
  int failCode_ = 0;
  std::vector<RecordedRequest> requests_;
  HttpServerPtr server_;
};

}  // namespace kube::testing
