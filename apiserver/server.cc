#include "apiserver/server.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "apiserver/certs.h"
#include "kube/files.h"
#include "kube/kubeconfig.h"
#include "kube/yaml.h"

namespace apiserver {

namespace {

std::string readFile(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

kube::StatusOr<std::string> adminToken(const std::string& dir) {
  std::string path = dir + "/admin.token";
  std::string tok = readFile(path);
  while (!tok.empty() && (tok.back() == '\n' || tok.back() == ' ')) tok.pop_back();
  if (!tok.empty()) return tok;
  tok = "fxa." + randomSuffix(40);
  std::ofstream f(path);
  if (!f) return kube::Status::internal("cannot write " + path);
  f << tok << "\n";
  f.close();
  ::chmod(path.c_str(), 0600);
  return tok;
}

}  // namespace

Server::DirLock::~DirLock() {
  if (fd >= 0) ::close(fd);
}

// A second server on the same directory would keep its own revision counter and in-memory state
// over the same database, and rewrite the certificate and the kubeconfig: refuse it, before
// anything in the directory is touched.
kube::Status Server::lockDataDir(const std::string& dir) {
  std::string path = dir + "/lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return kube::Status::invalid("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {0};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return kube::Status::conflict("another foxden server is using " + dir +
                                    (holder.empty() ? "" : " (pid " + holder + ")") +
                                    "; stop it first, or give this one another --data-dir");
    }
    return kube::Status::invalid("cannot lock " + path + ": " + std::strerror(err));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  bool recorded = ::ftruncate(fd, 0) == 0 &&
                  ::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size());
  (void)recorded;  // the pid only serves the message above; the lock is what counts
  lock_.fd = fd;
  return kube::Status::ok();
}

kube::StatusOr<std::unique_ptr<Server>> Server::start(const ServerOptions& o) {
  std::unique_ptr<Server> s(new Server());
  ::mkdir(o.dataDir.c_str(), 0700);
  if (kube::Status st = s->lockDataDir(o.dataDir); !st) return st;
  auto pki = ensurePki(o.dataDir + "/pki", {o.host});
  if (!pki) return pki.status();
  auto storage = Storage::open(o.dataDir + "/state.db", o.historySize);
  if (!storage) return storage.status();
  s->storage_ = std::move(*storage);
  s->registry_ = std::make_unique<Registry>();
  auto token = adminToken(o.dataDir);
  if (!token) return token.status();
  s->auth_ = std::make_unique<Authenticator>(*s->storage_, *token);
  std::string advertised = (o.host == "0.0.0.0" || o.host == "::") ? "127.0.0.1" : o.host;
  ApiOptions ao;
  ao.version = o.version;
  ao.bookmarkIntervalSeconds = o.bookmarkIntervalSeconds;
  s->api_ = std::make_unique<Api>(*s->storage_, *s->registry_, *s->auth_, ao);
  s->gc_ = std::make_unique<GarbageCollector>(*s->storage_, *s->registry_, *s->api_);
  kube::Status st = s->bootstrap(o);
  if (!st) return st;

  kube::HttpServerOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.certFile = pki->serverCertFile;
  ho.keyFile = pki->serverKeyFile;
  ho.maxBodyBytes = o.maxBodyBytes;
  Api* api = s->api_.get();
  auto http = kube::startHttpServer(ho, [api](const kube::ServerRequest& r, kube::ResponseWriter& w) {
    api->handle(r, w);
  });
  if (!http) return http.status();
  s->http_ = std::move(*http);
  s->gc_->start();

  kube::RestConfig rc;
  std::string hostForUrl = advertised.find(':') != std::string::npos ? "[" + advertised + "]" : advertised;
  rc.server = "https://" + hostForUrl + ":" + std::to_string(s->http_->port());
  rc.caPem = pki->caPem;
  rc.bearerToken = *token;
  rc.ns = "default";
  s->kubeconfig_ = o.dataDir + "/kubeconfig";
  // 0600 from its creation and renamed into place: the admin token is never readable by others,
  // and a reader (a script polling for the file, kubectl) never sees half of it.
  if (kube::Status st = kube::writeFileAtomic(s->kubeconfig_, kube::renderKubeconfig(rc, "foxden-admin", "foxden")); !st) {
    return st;
  }
  return s;
}

kube::Status Server::bootstrap(const ServerOptions& o) {
  // CRDs already stored come back first, so their objects are served from the first request.
  for (const auto& [key, e] : storage_->list("apiextensions.k8s.io/customresourcedefinitions/")) {
    auto d = kube::parseJson(*e.json);
    if (d) (void)registry_->addCrd(*d);
  }
  auto nsType = registry_->find("", "v1", "namespaces");
  for (const char* ns : {"default", "kube-system", "kube-public", "foxden-system"}) {
    if (storage_->get("core/namespaces//" + std::string(ns))) continue;
    kube::Json obj;
    obj.Parse((std::string(R"({"apiVersion":"v1","kind":"Namespace","metadata":{"name":")") + ns + "\"}}").c_str());
    auto r = api_->create(nsType, "", std::move(obj));
    if (!r) return r.status();
  }
  if (o.crdsDir.empty()) return kube::Status::ok();
  DIR* dir = ::opendir(o.crdsDir.c_str());
  if (dir == nullptr) return kube::Status::notFound("cannot open CRD directory " + o.crdsDir);
  std::vector<std::string> files;
  while (dirent* de = ::readdir(dir)) {
    std::string n = de->d_name;
    if (n.size() > 5 && (n.ends_with(".yaml") || n.ends_with(".yml"))) files.push_back(o.crdsDir + "/" + n);
  }
  ::closedir(dir);
  std::sort(files.begin(), files.end());
  auto crdType = registry_->find("apiextensions.k8s.io", "v1", "customresourcedefinitions");
  for (const auto& f : files) {
    auto docs = kube::yamlDocumentsToJson(readFile(f));
    if (!docs) return kube::Status::badRequest(f + ": " + docs.status().message());
    for (auto& d : *docs) {
      if (kube::getString(d, {"kind"}) != "CustomResourceDefinition") continue;
      std::string name = kube::name(d);
      if (storage_->get(crdType->key("", name))) {
        kube::Json spec = kube::cloneJson(*kube::find(d, {"spec"}));
        auto r = api_->modify(crdType, "", name, [&](kube::Json& cur) {
          kube::setMember(cur, "spec", kube::JsonValue(spec, cur.GetAllocator()), cur.GetAllocator());
          return kube::Status::ok();
        });
        if (!r) return kube::Status(r.status().code(), r.status().reason(), f + ": " + r.status().message());
        auto now = storage_->get(crdType->key("", name));
        if (now) {
          auto doc = kube::parseJson(*now->json);
          if (doc) (void)registry_->addCrd(*doc);
        }
      } else {
        auto r = api_->create(crdType, "", std::move(d));
        if (!r) return kube::Status(r.status().code(), r.status().reason(), f + ": " + r.status().message());
      }
    }
  }
  return kube::Status::ok();
}

void Server::stop() {
  if (storage_) storage_->closeWatchers();
  if (http_) http_->stop();
  if (gc_) gc_->stop();
}

Server::~Server() { stop(); }

}  // namespace apiserver
