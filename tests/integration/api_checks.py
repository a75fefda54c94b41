#!/usr/bin/env python3
"""Checks of `foxden server` over raw HTTPS (stdlib only): bad input and authorisation, a fuzz run,
watch resumption and expiry, and durability across kill -9.

Usage: api_checks.py FOXDEN_BINARY CRDS_DIR WORKDIR
Each check prints one line; the last line is "N passed, N failed".
"""

import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

FOXDEN, CRDS, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
PASSED = 0
FAILED = 0


def check(name, ok, detail=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    """A real `foxden server` process on a free port with its own data directory."""

    def __init__(self, data, *extra):
        self.data, self.extra, self.port, self.proc = data, extra, free_port(), None

    def start(self):
        log = open(os.path.join(WORK, "server.log"), "ab")
        wrap = os.environ.get("FOXDEN_WRAP", "").split()  # e.g. "gdb -batch -ex run -ex bt --args"
        self.proc = subprocess.Popen(
            wrap + [FOXDEN, "server", "--data-dir", self.data, "--listen", f"127.0.0.1:{self.port}", "--crds", CRDS, *self.extra],
            stdout=log, stderr=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.proc.poll() is not None:
                    raise RuntimeError("server exited: " + open(os.path.join(WORK, "server.log")).read()[-2000:])
                if os.path.exists(os.path.join(self.data, "kubeconfig")):
                    c = self.conn()
                    c.request("GET", "/healthz")
                    if c.getresponse().status == 200:
                        return self
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait()

    def ctx(self):
        c = ssl.create_default_context(cafile=os.path.join(self.data, "pki", "ca.crt"))
        return c

    def conn(self, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx(), timeout=timeout)

    def token(self):
        return open(os.path.join(self.data, "admin.token")).read().strip()


def call(srv, method, path, body=None, token=None, ctype="application/json", conn=None):
    c = conn or srv.conn()
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    if body is not None:
        headers["Content-Type"] = ctype
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        doc = None
    return r.status, doc, data


def snapshot(srv, tok):
    """Everything a failed request must leave untouched: global revision and the objects."""
    out = {}
    for path in ["/api/v1/namespaces/default/configmaps", "/apis/foxden.io/v1alpha1/workers",
                 "/apis/foxden.io/v1alpha1/allocations", "/apis/coordination.k8s.io/v1/leases",
                 "/apis/example.com/v1/widgets"]:
        st, doc, _ = call(srv, "GET", path, token=tok)
        out[path] = json.dumps(doc.get("items", []), sort_keys=True) if st == 200 else st
    return out


def cm(name, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


# ---------------------------------------------------------------------------------------------
def bad_input_and_auth():
    srv = Server(os.path.join(WORK, "bad")).start()
    tok = srv.token()
    widgets_crd = open(os.path.join(os.path.dirname(__file__), "testdata", "widgets-crd.yaml")).read()
    st, _, _ = call(srv, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", widgets_crd, tok,
                    "application/yaml")
    check("create CRD from YAML", st == 201, st)
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", cm("base", a="1"), tok)
    check("create configmap", st == 201, st)
    before = snapshot(srv, tok)

    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps")
    check("no token -> 401", st == 401 and doc and doc.get("reason") == "Unauthorized", (st, doc))
    st, _, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps", token="fxa.wrong")
    check("bad token -> 401", st == 401, st)
    st, _, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps", token="fxw.w1.nope")
    check("unknown worker token -> 401", st == 401, st)

    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", '{"metadata": {"name": "x"', tok)
    check("malformed JSON -> 400", st == 400 and doc["reason"] == "BadRequest" and "invalid JSON" in doc["message"],
          (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", "[1,2]", tok)
    check("non-object body -> 400", st == 400, (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", cm("Bad_Name"), tok)
    check("invalid name -> 422", st == 422 and "metadata.name" in doc["message"], (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps",
                      {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "data": {"a": 1}}, tok)
    check("configmap data not string -> 422", st == 422 and "data[a]" in doc["message"], (st, doc))
    st, doc, _ = call(srv, "POST", "/apis/example.com/v1/namespaces/default/widgets",
                      {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                       "spec": {"size": 0}}, tok)
    check("schema violation -> 422 naming the field",
          st == 422 and "spec.size" in doc["message"] and doc["details"]["causes"][0]["field"] == "spec.size", (st, doc))
    st, doc, _ = call(srv, "POST", "/apis/example.com/v1/namespaces/default/widgets",
                      {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}, tok)
    check("missing required -> 422", st == 422 and "spec.size: Required value" in doc["message"], (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps",
                      {"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "v"}}, tok)
    check("wrong apiVersion -> 400", st == 400, (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/nope/configmaps", cm("x"), tok)
    check("missing namespace -> 404", st == 404 and "namespaces \"nope\" not found" in doc["message"], (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", cm("base"), tok)
    check("duplicate -> 409 AlreadyExists", st == 409 and doc["reason"] == "AlreadyExists", (st, doc))
    # kube-apiserver validates before its storage create: an invalid object is 422 even where the
    # name is taken.
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps",
                      {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "base"}, "data": {"a": 1}}, tok)
    check("invalid duplicate -> 422, validation first", st == 422 and "data[a]" in doc["message"], (st, doc))
    stale = cm("base", a="2")
    stale["metadata"]["resourceVersion"] = "1"
    st, doc, _ = call(srv, "PUT", "/api/v1/namespaces/default/configmaps/base", stale, tok)
    check("stale resourceVersion -> 409 Conflict", st == 409 and doc["reason"] == "Conflict", (st, doc))
    big = cm("big", a="x" * (4 * 1024 * 1024))
    try:
        st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", big, tok)
        check("oversized body -> 413", st == 413, (st, doc))
    except (ConnectionError, OSError) as e:  # the server may close before reading it all
        check("oversized body refused", True, e)
    st, doc, _ = call(srv, "PATCH", "/api/v1/namespaces/default/configmaps/base", "{}", tok, "text/plain")
    check("unknown patch type -> 415", st == 415, (st, doc))
    st, doc, _ = call(srv, "PATCH", "/apis/example.com/v1/namespaces/default/widgets/none", "{}", tok,
                      "application/strategic-merge-patch+json")
    check("strategic merge on a CRD -> 415", st == 415, (st, doc))
    st, doc, _ = call(srv, "PATCH", "/api/v1/namespaces/default/configmaps/base", '[{"op":"test","path":"/data/a","value":"9"}]',
                      tok, "application/json-patch+json")
    check("failed json-patch test -> 422", st == 422, (st, doc))
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(", token=tok)
    check("bad label selector -> 400", st == 400, (st, doc))
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps?fieldSelector=data.a%3D1", token=tok)
    check("unsupported field selector -> 400", st == 400 and "field label not supported" in doc["message"], (st, doc))
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps?continue=garbage", token=tok)
    check("bad continue token -> 400", st == 400, (st, doc))
    st, doc, _ = call(srv, "GET", "/apis/nope.io/v1/things", token=tok)
    check("unknown resource -> 404", st == 404, (st, doc))
    st, doc, _ = call(srv, "DELETE", "/api/v1/namespaces/default/configmaps/base",
                      {"preconditions": {"uid": "not-the-uid"}}, tok)
    check("delete precondition -> 409", st == 409, (st, doc))

    kc_path = os.path.join(srv.data, "kubeconfig")
    check("the admin kubeconfig is 0600 and written whole (no temporary file left)",
          os.stat(kc_path).st_mode & 0o777 == 0o600 and not os.path.exists(kc_path + ".tmp"),
          (oct(os.stat(kc_path).st_mode), os.listdir(srv.data)))

    # Worker identities: the kubelet's NodeRestriction rule.
    out = subprocess.run([FOXDEN, "token", "create", "--worker", "w1", "--kubeconfig",
                          os.path.join(srv.data, "kubeconfig")], capture_output=True, text=True)
    check("token create", out.returncode == 0 and "fxw.w1." in out.stdout, out.stderr)
    wtok = [l.split("token:")[1].strip().strip('"') for l in out.stdout.splitlines() if "token:" in l][0]
    out2 = subprocess.run([FOXDEN, "token", "create", "--worker", "../etc", "--kubeconfig",
                           os.path.join(srv.data, "kubeconfig")], capture_output=True, text=True)
    check("token create rejects bad names", out2.returncode != 0 and "invalid worker name" in out2.stderr, out2.stderr)
    worker = lambda n: {"apiVersion": "foxden.io/v1alpha1", "kind": "Worker", "metadata": {"name": n}, "spec": {}}
    st, _, _ = call(srv, "POST", "/apis/foxden.io/v1alpha1/workers", worker("w1"), wtok)
    check("worker creates its own Worker", st == 201, st)
    st, _, _ = call(srv, "POST", "/apis/foxden.io/v1alpha1/workers", worker("w2"), tok)
    check("admin creates Worker w2", st == 201, st)
    lease = lambda n: {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": n, "namespace": "foxden-system"}, "spec": {"holderIdentity": n}}
    st, _, _ = call(srv, "POST", "/apis/coordination.k8s.io/v1/namespaces/foxden-system/leases", lease("w1"), wtok)
    check("worker creates its own Lease", st == 201, st)
    alloc = lambda n, w: {"apiVersion": "foxden.io/v1alpha1", "kind": "Allocation",
                          "metadata": {"name": n, "labels": {"foxden.io/worker": w}},
                          "spec": {"workerName": w, "tasks": [{"name": "main", "command": ["/bin/true"]}]}}
    for n, w in [("a1", "w1"), ("a2", "w2")]:
        st, _, _ = call(srv, "POST", "/apis/foxden.io/v1alpha1/namespaces/default/allocations", alloc(n, w), tok)
        check(f"admin creates allocation {n}", st == 201, st)
    st, _, _ = call(srv, "PATCH", "/apis/foxden.io/v1alpha1/namespaces/default/allocations/a1/status",
                    '{"status":{"phase":"Running"}}', wtok, "application/merge-patch+json")
    check("worker patches status of its allocation", st == 200, st)
    before = snapshot(srv, tok)
    denied = [
        ("POST", "/apis/foxden.io/v1alpha1/workers", worker("w3"), "application/json"),
        ("PUT", "/apis/foxden.io/v1alpha1/workers/w2", worker("w2"), "application/json"),
        ("PATCH", "/apis/foxden.io/v1alpha1/workers/w2/status", '{"status":{"x":1}}', "application/merge-patch+json"),
        ("DELETE", "/apis/foxden.io/v1alpha1/workers/w1", None, "application/json"),
        ("POST", "/apis/coordination.k8s.io/v1/namespaces/foxden-system/leases", lease("w2"), "application/json"),
        ("PATCH", "/apis/coordination.k8s.io/v1/namespaces/default/leases/w1", '{}', "application/merge-patch+json"),
        ("PATCH", "/apis/foxden.io/v1alpha1/namespaces/default/allocations/a2/status", '{"status":{"phase":"Running"}}',
         "application/merge-patch+json"),
        ("PATCH", "/apis/foxden.io/v1alpha1/namespaces/default/allocations/a1", '{"spec":{"workerName":"w1"}}',
         "application/merge-patch+json"),
        ("PATCH", "/apis/foxden.io/v1alpha1/namespaces/default/allocations/ghost/status", '{}',
         "application/merge-patch+json"),
        ("POST", "/api/v1/namespaces/default/configmaps", cm("evil"), "application/json"),
        ("GET", "/api/v1/namespaces/foxden-system/secrets", None, "application/json"),
        ("GET", "/api/v1/namespaces/foxden-system/secrets/worker-token-w1", None, "application/json"),
    ]
    for method, path, body, ct in denied:
        st, doc, _ = call(srv, method, path, body, wtok, ct)
        check(f"worker denied: {method} {path}", st == 403 and doc["reason"] == "Forbidden", (st, doc))
    st, doc, _ = call(srv, "GET", "/apis/foxden.io/v1alpha1/allocations?labelSelector=foxden.io%2Fworker%3Dw1", token=wtok)
    check("worker may list its own allocations", st == 200 and [i["metadata"]["name"] for i in doc["items"]] == ["a1"], (st, doc))
    st, _, _ = call(srv, "GET", "/apis/foxden.io/v1alpha1/namespaces/default/allocations/a1", token=wtok)
    check("worker may read its own allocation", st == 200, st)
    for path in ["/apis/foxden.io/v1alpha1/namespaces/default/allocations",
                 "/apis/foxden.io/v1alpha1/allocations?labelSelector=foxden.io%2Fworker%3Dw2",
                 "/apis/foxden.io/v1alpha1/namespaces/default/allocations/a2",
                 "/apis/foxden.io/v1alpha1/namespaces/default/allocations/ghost"]:
        st, doc, _ = call(srv, "GET", path, token=wtok)
        check(f"worker may not read others' allocations: {path}", st == 403, (st, doc))
    after = snapshot(srv, tok)
    check("refused requests changed nothing", before == after)

    # /metrics: kube-apiserver's request counters, for the admin only.
    st, _, data = call(srv, "GET", "/metrics", token=wtok)
    check("worker denied: GET /metrics", st == 403, st)
    st, _, data = call(srv, "GET", "/metrics")
    check("anonymous denied: GET /metrics", st == 401, st)
    st, _, data = call(srv, "GET", "/metrics", token=tok)
    text = data.decode()
    check("admin reads /metrics", st == 200 and "# TYPE apiserver_request_total counter" in text, st)
    check("metrics: refused worker writes counted with their code",
          'apiserver_request_total{code="403",component="apiserver",group="foxden.io",resource="workers",'
          'scope="resource",subresource="",verb="DELETE",version="v1alpha1"}' in text, text[:2000])
    check("metrics: lists are LIST, with a duration histogram",
          'verb="LIST"' in text and "apiserver_request_duration_seconds_count{" in text)
    srv.kill(signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
def fuzz():
    srv = Server(os.path.join(WORK, "fuzz")).start()
    tok = srv.token()
    rnd = random.Random(1234)
    seeds = [cm("f1", a="1"), {"apiVersion": "foxden.io/v1alpha1", "kind": "Job", "metadata": {"name": "j"},
                               "spec": {"groups": [{"name": "g", "count": 1}]}},
             [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}],
             {"metadata": {"labels": {"x": None}}, "data": {"k": "v"}}]
    paths = ["/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/default/configmaps/f1",
             "/apis/foxden.io/v1alpha1/namespaces/default/jobs", "/apis/foxden.io/v1alpha1/namespaces/default/jobs/j",
             "/apis/foxden.io/v1alpha1/namespaces/default/jobs/j/status", "/api/v1/namespaces",
             "/api/v1/namespaces/default", "/apis", "/api", "/openapi/v3", "/apis/foxden.io/v1alpha1",
             "/api/v1/namespaces/default/configmaps/f1/status", "/api/v1/namespaces/%2e%2e/configmaps",
             "/apis/foxden.io/v1alpha1/workers/x", "/api/v1/namespaces/default/secrets"]
    ctypes = ["application/json", "application/merge-patch+json", "application/json-patch+json",
              "application/strategic-merge-patch+json", "application/apply-patch+yaml", "application/yaml",
              "text/plain", "application/vnd.kubernetes.protobuf", ""]

    def mutate(s):
        s = bytearray(s.encode())
        for _ in range(rnd.randint(1, 8)):
            op = rnd.random()
            if not s:
                break
            i = rnd.randrange(len(s))
            if op < 0.3:
                s[i] = rnd.randrange(256)
            elif op < 0.5:
                del s[i:i + rnd.randint(1, 10)]
            elif op < 0.7:
                s[i:i] = rnd.choice([b"{", b"[", b"\"", b"null", b"1e999", b"-0", b"\\u0000", b"9" * 30, b",", b"}"])
            else:
                s = s[:i]
        return bytes(s)

    server_errors = 0
    conn = srv.conn(timeout=10)
    n = 3000
    for i in range(n):
        method = rnd.choice(["GET", "POST", "PUT", "PATCH", "DELETE"])
        path = rnd.choice(paths)
        if rnd.random() < 0.3:
            path += rnd.choice(["?watch=0", "?limit=-1", "?limit=abc", "?labelSelector=%ff%fe", "?fieldSelector=a",
                                "?continue=AAAA", "?resourceVersion=-5", "?dryRun=All", "?fieldValidation=Strict",
                                "?fieldManager=" + "m" * 300, "?propagationPolicy=Nope"])
        body = None
        if method in ("POST", "PUT", "PATCH", "DELETE") and rnd.random() < 0.9:
            seed = json.dumps(rnd.choice(seeds))
            body = mutate(seed) if rnd.random() < 0.8 else seed.encode()
            if rnd.random() < 0.05:
                body = b"[" * 100000 + b"]" * 100000  # deep nesting
            elif rnd.random() < 0.1:
                body = b"k8s\x00" + bytes(rnd.randrange(256) for _ in range(rnd.randrange(200)))
        try:
            st, doc, raw = call(srv, method, path, body, tok, rnd.choice(ctypes), conn)
            if st >= 500:
                server_errors += 1
                if server_errors <= 5:
                    print(f"     5xx: {method} {path} {st} {raw[:200]!r} body={body[:120] if body else None!r}")
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = srv.conn(timeout=10)
        if i % 500 == 0:
            st, _, _ = call(srv, "GET", "/healthz")
            if st != 200:
                break
    check(f"fuzz: {n} mutated requests, no 5xx", server_errors == 0, f"{server_errors} server errors")
    # Raw garbage on the TLS port, then a normal request.
    for junk in [b"\x16\x03\x01\xff\xff" + os.urandom(300), b"GET / HTTP/1.1\r\n" + b"X" * 100000, os.urandom(2000)]:
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(junk)
            s.close()
        except OSError:
            pass
    try:
        ss = srv.ctx().wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=5), server_hostname="127.0.0.1")
        ss.sendall(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n")
        ss.recv(1000)
        ss.close()
    except OSError:
        pass
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces", token=tok)
    check("server keeps serving after fuzz", st == 200 and srv.proc.poll() is None, st)
    srv.kill(signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
def read_events(srv, tok, path, until_rv, timeout=20, stop_on_error=False):
    """Reads a watch stream until an event with resourceVersion >= until_rv (or an ERROR)."""
    c = srv.conn(timeout=timeout)
    c.request("GET", path, headers={"Authorization": "Bearer " + tok})
    r = c.getresponse()
    events = []
    if r.status != 200:
        return r.status, events
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = r.readline()
        if not line:
            break
        ev = json.loads(line)
        if ev["type"] == "BOOKMARK":
            continue
        events.append(ev)
        if ev["type"] == "ERROR":
            break
        if int(ev["object"]["metadata"]["resourceVersion"]) >= until_rv:
            break
    c.close()
    return 200, events


def watch_checks():
    srv = Server(os.path.join(WORK, "watch"), "--watch-history", "50").start()
    tok = srv.token()
    rvs = []
    for i in range(20):
        st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", cm(f"w{i}", i=str(i)), tok)
        rvs.append(int(doc["metadata"]["resourceVersion"]))
    for i in range(0, 20, 2):
        st, doc, _ = call(srv, "PATCH", f"/api/v1/namespaces/default/configmaps/w{i}", '{"data":{"p":"1"}}', tok,
                          "application/merge-patch+json")
        rvs.append(int(doc["metadata"]["resourceVersion"]))
    st, _, _ = call(srv, "DELETE", "/api/v1/namespaces/default/configmaps/w1", token=tok)
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps", token=tok)
    last = int(doc["metadata"]["resourceVersion"])
    start = rvs[5]
    st, events = read_events(srv, tok, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={start}", last)
    got = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    want = [rv for rv in rvs if rv > start] + [last]
    check("watch resume: every later event exactly once, in order", got == want, f"got {got} want {want}")
    check("watch resume: DELETED last", events and events[-1]["type"] == "DELETED", events[-1:] if events else None)
    # A live watch sees writes made after it started.
    result = {}

    def watcher():
        result["r"] = read_events(srv, tok, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={last}"
                                  "&labelSelector=live%3Dyes", last + 3)
    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.5)
    call(srv, "POST", "/api/v1/namespaces/default/configmaps", {**cm("live"), "metadata": {"name": "live", "labels": {"live": "yes"}}}, tok)
    call(srv, "POST", "/api/v1/namespaces/default/configmaps", cm("other"), tok)
    call(srv, "PATCH", "/api/v1/namespaces/default/configmaps/live", '{"metadata":{"labels":{"live":"no"}}}', tok,
         "application/merge-patch+json")
    t.join(30)
    types = [e["type"] for e in result.get("r", (0, []))[1]]
    check("live watch with selector: ADDED then DELETED on label change", types == ["ADDED", "DELETED"], types)
    # Too old: history is 50 events.
    for i in range(60):
        call(srv, "PATCH", "/api/v1/namespaces/default/configmaps/w0", json.dumps({"data": {"n": str(i)}}), tok,
             "application/merge-patch+json")
    st, events = read_events(srv, tok, "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2", 10**9, 5)
    check("too-old resourceVersion -> 410 Expired", st == 410 or (events and events[0]["type"] == "ERROR"
                                                                  and events[0]["object"]["code"] == 410), (st, events[:1]))
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc", token=tok)
    check("invalid resourceVersion -> 400", st == 400, st)
    # Paging: limit/continue visits every object once.
    names, cont = [], ""
    while True:
        st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps?limit=3" + ("&continue=" + cont if cont else ""), token=tok)
        names += [i["metadata"]["name"] for i in doc["items"]]
        cont = doc["metadata"].get("continue", "")
        if not cont:
            break
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/default/configmaps", token=tok)
    check("paging visits every object once", names == [i["metadata"]["name"] for i in doc["items"]], names)
    srv.kill(signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
def durability():
    data = os.path.join(WORK, "durable")
    srv = Server(data).start()
    tok = srv.token()
    acked = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(wid):
        conn = None
        i = 0
        while not stop.is_set():
            name = f"d{wid}-{i}"
            try:
                conn = conn or srv.conn(timeout=5)
                st, doc, _ = call(srv, "POST", "/api/v1/namespaces/default/configmaps", cm(name, v=str(i)), tok, conn=conn)
                if st == 201:
                    with lock:
                        acked[name] = int(doc["metadata"]["resourceVersion"])
                i += 1
            except (OSError, http.client.HTTPException):
                conn = None
                if stop.is_set():
                    return
                time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    srv.kill(signal.SIGKILL)  # in the middle of the write loop
    stop.set()
    for t in threads:
        t.join()
    max_rv = max(acked.values())
    srv2 = Server(data)
    srv2.port = free_port()
    srv2.start()
    st, doc, _ = call(srv2, "GET", "/api/v1/namespaces/default/configmaps", token=tok)
    stored = {i["metadata"]["name"]: int(i["metadata"]["resourceVersion"]) for i in doc["items"]}
    missing = [n for n in acked if n not in stored]
    check(f"durability: all {len(acked)} acknowledged writes survive kill -9", not missing, missing[:5])
    check("durability: revisions unchanged", all(stored[n] == rv for n, rv in acked.items() if n in stored))
    st, doc, _ = call(srv2, "POST", "/api/v1/namespaces/default/configmaps", cm("after"), tok)
    check("durability: resourceVersion keeps increasing", st == 201 and int(doc["metadata"]["resourceVersion"]) > max_rv,
          (st, doc and doc["metadata"]["resourceVersion"], max_rv))
    # One server per data directory (the one killed above left no stale lock: srv2 started). A
    # second is refused before it touches anything: same kubeconfig, certificate and state.
    # srv2 rewrites the kubeconfig (its new port) just after it starts serving: wait for that first.
    wait_until(lambda: f":{srv2.port}" in open(os.path.join(data, "kubeconfig")).read())
    kubeconfig = open(os.path.join(data, "kubeconfig")).read()
    cert = open(os.path.join(data, "pki", "server.crt")).read()
    r = subprocess.run([FOXDEN, "server", "--data-dir", data, "--listen", f"localhost:{free_port()}", "--crds", CRDS],
                       capture_output=True, text=True, timeout=60)
    check("one server per data dir: a second exits non-zero", r.returncode != 0, r.returncode)
    check("one server per data dir: it says why", "another foxden server is using" in r.stderr and
          str(srv2.proc.pid) in r.stderr, r.stderr[-300:])
    check("one server per data dir: kubeconfig and certificate untouched",
          open(os.path.join(data, "kubeconfig")).read() == kubeconfig and
          open(os.path.join(data, "pki", "server.crt")).read() == cert)
    st, doc, _ = call(srv2, "GET", "/api/v1/namespaces/default/configmaps/after", token=tok)
    check("one server per data dir: the first still serves", st == 200, st)
    srv2.kill(signal.SIGTERM)


def wait_until(fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.05)
    return False


def garbage_collection():
    srv = Server(os.path.join(WORK, "gc")).start()
    tok = srv.token()
    base = "/api/v1/namespaces/default/configmaps"

    def make_pair(owner):
        st, doc, _ = call(srv, "POST", base, cm(owner), tok)
        dep = cm(owner + "-dep")
        dep["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner,
                                               "uid": doc["metadata"]["uid"], "blockOwnerDeletion": True}]
        st2, _, _ = call(srv, "POST", base, dep, tok)
        return st == 201 and st2 == 201

    exists = lambda n: call(srv, "GET", f"{base}/{n}", token=tok)[0] == 200
    check("gc: create owner and dependent", make_pair("bg"))
    call(srv, "DELETE", f"{base}/bg", {"propagationPolicy": "Background"}, tok)
    check("gc background: owner gone at once", not exists("bg"))
    check("gc background: dependent follows", wait_until(lambda: not exists("bg-dep")))

    check("gc: foreground pair", make_pair("fg"))
    dep = call(srv, "GET", f"{base}/fg-dep", token=tok)[1]
    dep["metadata"]["finalizers"] = ["example.com/slow"]
    call(srv, "PUT", f"{base}/fg-dep", dep, tok)
    st, doc, _ = call(srv, "DELETE", f"{base}/fg", {"propagationPolicy": "Foreground"}, tok)
    check("gc foreground: owner waits with foregroundDeletion",
          st == 200 and "foregroundDeletion" in doc["metadata"].get("finalizers", []), (st, doc))
    check("gc foreground: dependent marked for deletion",
          wait_until(lambda: "deletionTimestamp" in call(srv, "GET", f"{base}/fg-dep", token=tok)[1]["metadata"]))
    check("gc foreground: owner still there while dependent lingers", exists("fg"))
    call(srv, "PATCH", f"{base}/fg-dep", '{"metadata":{"finalizers":null}}', tok, "application/merge-patch+json")
    check("gc foreground: owner goes after dependent", wait_until(lambda: not exists("fg") and not exists("fg-dep")))

    check("gc: orphan pair", make_pair("or"))
    call(srv, "DELETE", f"{base}/or", {"propagationPolicy": "Orphan"}, tok)
    check("gc orphan: owner goes", wait_until(lambda: not exists("or")))
    st, doc, _ = call(srv, "GET", f"{base}/or-dep", token=tok)
    check("gc orphan: dependent stays without the reference",
          st == 200 and not doc["metadata"].get("ownerReferences"), (st, doc))

    # A dependent whose owner never existed (or went before it was created) is collected.
    stray = cm("stray")
    stray["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
                                             "uid": "00000000-0000-0000-0000-00000000dead"}]
    call(srv, "POST", base, stray, tok)
    check("gc: a dependent of a missing owner goes", wait_until(lambda: not exists("stray")))
    # The collector reads only metadata, wherever the client put it in the object.
    late = cm("late-metadata", a="1")
    late["metadata"]["ownerReferences"] = stray["metadata"]["ownerReferences"]
    late = {k: late[k] for k in [k for k in late if k != "metadata"] + ["metadata"]}
    st, doc, _ = call(srv, "POST", base, late, tok)
    check("gc: metadata after data: created", st == 201 and list(late)[-1] == "metadata", (st, doc))
    check("gc: metadata after data: its missing owner is seen too", wait_until(lambda: not exists("late-metadata")))

    # A three-level chain with a wide middle: the cascade runs to the end.
    st, root, _ = call(srv, "POST", base, cm("root"), tok)
    def owned(name, owner_doc):
        d = cm(name)
        d["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                             "name": owner_doc["metadata"]["name"],
                                             "uid": owner_doc["metadata"]["uid"]}]
        return call(srv, "POST", base, d, tok)[1]
    mids = [owned(f"mid{i}", root) for i in range(50)]
    leaves = [owned(f"leaf{i}", mids[i % 50]) for i in range(100)]
    check("gc chain: created", len(leaves) == 100 and all("metadata" in x for x in leaves))
    call(srv, "DELETE", f"{base}/root", token=tok)
    check("gc chain: 150 dependents over two levels follow the root",
          wait_until(lambda: not [i for i in call(srv, "GET", base, token=tok)[1]["items"]
                                  if i["metadata"]["name"].startswith(("mid", "leaf"))]))

    st, _, _ = call(srv, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}, tok)
    for i in range(5):
        call(srv, "POST", "/api/v1/namespaces/doomed/configmaps", cm(f"c{i}"), tok)
    st, doc, _ = call(srv, "DELETE", "/api/v1/namespaces/doomed", token=tok)
    check("namespace delete: Terminating", st == 200 and doc["status"]["phase"] == "Terminating", (st, doc))
    st, doc, _ = call(srv, "POST", "/api/v1/namespaces/doomed/configmaps", cm("late"), tok)
    check("namespace delete: no new content", st in (403, 404), (st, doc))
    check("namespace delete: contents and namespace go",
          wait_until(lambda: call(srv, "GET", "/api/v1/namespaces/doomed", token=tok)[0] == 404))
    st, doc, _ = call(srv, "GET", "/api/v1/namespaces/doomed/configmaps", token=tok)
    check("namespace delete: nothing left inside", st == 200 and doc["items"] == [], (st, doc))
    srv.kill(signal.SIGTERM)


if __name__ == "__main__":
    for fn in (bad_input_and_auth, fuzz, watch_checks, durability, garbage_collection):
        try:
            fn()
        except Exception as e:  # a crashed section is a failure, not a crash of the suite
            import traceback
            traceback.print_exc()
            check(fn.__name__ + " completed", False, repr(e))
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)
