#include "kube/node_lease.h"

#include "kube/json.h"
#include "kube/timeutil.h"

namespace kube {

Status renewNodeLease(RestClient& client, const std::string& ns, const std::string& name, int leaseDurationSeconds) {
  const ResourceRef leases{"coordination.k8s.io", "v1", "leases", ns, "", ""};
  std::string now = formatMicroTime(Clock::now());
  Json patch;
  patch.SetObject();
  auto& a = patch.GetAllocator();
  JsonValue spec(rapidjson::kObjectType);
  setString(spec, "holderIdentity", name, a);
  spec.AddMember("leaseDurationSeconds", leaseDurationSeconds, a);
  setString(spec, "renewTime", now, a);
  patch.AddMember("spec", std::move(spec), a);
  auto r = client.patch(leases.withName(name), PatchType::kMerge, toJson(patch));
  if (r) return Status::ok();
  if (r.status().code() != 404) return r.status();
  // First heartbeat (or the Lease was deleted): create it; a concurrent create is as good.
  Json lease = cloneJson(patch);
  auto& la = lease.GetAllocator();
  setString(lease, "apiVersion", "coordination.k8s.io/v1", la);
  setString(lease, "kind", "Lease", la);
  JsonValue md(rapidjson::kObjectType);
  setString(md, "name", name, la);
  setString(md, "namespace", ns, la);
  lease.AddMember("metadata", std::move(md), la);
  auto c = client.create(leases, lease);
  return c || c.status().code() == 409 ? Status::ok() : c.status();
}

}  // namespace kube
