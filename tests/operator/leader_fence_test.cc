// LeaderFence: writes stop at the fence the moment it closes, GETs pass; in a batch, the fence is
// asked for each request as it is sent. The inner client is a named fake that records what
// reaches it and answers 200.
#include "operator/leader_fence.h"

#include <doctest/doctest.h>

#include <mutex>

namespace op {
namespace {

class RecordingFakeClient : public kube::HttpClient {
 public:
  kube::StatusOr<kube::HttpResponse> send(const kube::HttpRequest& request, kube::Canceller*) override {
    std::lock_guard l(mu);
    sent.push_back(request.method + " " + request.target);
    if (onSend) onSend();
    kube::HttpResponse r;
    r.status = 200;
    return r;
  }
  kube::StatusOr<kube::LineStreamPtr> stream(const kube::HttpRequest&, kube::Canceller*) override {
    return kube::Status::unavailable("the fake does not stream");
  }
  std::mutex mu;
  std::vector<std::string> sent;
  std::function<void()> onSend;
};

kube::HttpRequest rq(const std::string& method, const std::string& target) {
  kube::HttpRequest r;
  r.method = method;
  r.target = target;
  return r;
}

TEST_CASE("leader fence: closed, it refuses writes one by one and in batches; GETs pass") {
  auto inner = std::make_shared<RecordingFakeClient>();
  LeaderFence fence(inner);
  CHECK(fence.send(rq("POST", "/a"), nullptr).status().code() == 503);
  CHECK(fence.send(rq("GET", "/a"), nullptr).isOk());
  auto out = fence.sendAll({rq("POST", "/1"), rq("GET", "/2"), rq("DELETE", "/3")}, {});
  REQUIRE(out.size() == 3);
  CHECK(out[0].status().code() == 503);
  CHECK(out[1].isOk());
  CHECK(out[2].status().code() == 503);
  CHECK(inner->sent == std::vector<std::string>{"GET /a", "GET /2"});

  fence.open();
  inner->sent.clear();
  out = fence.sendAll({rq("POST", "/1"), rq("PUT", "/2")}, {});
  CHECK(out[0].isOk());
  CHECK(out[1].isOk());
  CHECK(inner->sent.size() == 2);
}

TEST_CASE("leader fence: closing it half way through a batch stops the rest of the batch") {
  auto inner = std::make_shared<RecordingFakeClient>();
  LeaderFence fence(inner);
  fence.open();
  inner->onSend = [&] {
    if (inner->sent.size() == 3) fence.close();  // leadership lost after the third create
  };
  std::vector<kube::HttpRequest> batch;
  batch.reserve(10);
  for (int i = 0; i < 10; ++i) batch.push_back(rq("POST", "/" + std::to_string(i)));
  kube::SendAllOptions o;
  o.maxInFlight = 1;
  auto out = fence.sendAll(batch, o);
  REQUIRE(out.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(out[i].isOk() == (i < 3));
  CHECK(inner->sent.size() == 3);
}

}  // namespace
}  // namespace op
