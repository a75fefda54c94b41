#!/usr/bin/env bash
# foxden-agent building exec tasks' roots (as root, real namespaces): --root-bind replaces the host
# directories bound into the root; a rootfs tarball (a tiny tree of /bin/sh and friends with their
# libraries, built here) becomes a task's whole root, unpacked once per digest and shared; a wrong
# digest, a missing file, a file outside --rootfs-dir and hostile tarballs are StartErrors with
# nothing written outside the cache; group volumes: emptyDir shared by a group's tasks, hostPath
# only under --host-volume (symlinks resolved first), readOnly enforced, reserved mountPaths refused.
source "$(dirname "$0")/lib/common.sh"
start_server
NODE=rootfs1
AGENT_DATA="$WORK/agent"
IMAGES="$WORK/images"     # --rootfs-dir
HOSTVOL="$WORK/hostvol"   # --host-volume
OUTSIDE="$WORK/outside"   # neither: must stay untouched
mkdir -p "$IMAGES" "$HOSTVOL/share" "$HOSTVOL/ro" "$OUTSIDE"
chmod 0777 "$HOSTVOL/share" "$HOSTVOL/ro" "$OUTSIDE"
ln -s "$OUTSIDE" "$HOSTVOL/escape"

# Bad flags are refused before anything starts.
expect_fail_contains "--root-bind must be absolute" "absolute path of an existing directory" \
  "$FOXDEN_BIN/foxden-agent" --kubeconfig /dev/null --root-bind usr
expect_fail_contains "--host-volume must exist" "absolute path of an existing directory" \
  "$FOXDEN_BIN/foxden-agent" --kubeconfig /dev/null --host-volume /nonexistent-$$
expect_fail_contains "--rootfs-dir without .." "without '.' or '..'" \
  "$FOXDEN_BIN/foxden-agent" --kubeconfig /dev/null --rootfs-dir "$IMAGES/../outside"
# foxden-zygote serves only the agent that started it.
expect_fail_contains "foxden-zygote by hand" "started by foxden-agent only" "$FOXDEN_BIN/foxden-zygote"
expect_fail_contains "foxden-zygote, bad fd" "started by foxden-agent only" "$FOXDEN_BIN/foxden-zygote" 3x $$
expect_fail_contains "foxden-zygote, not our parent" "started by foxden-agent only" "$FOXDEN_BIN/foxden-zygote" 3 1

# A tiny root: sh, ls, cat, touch and the libraries ldd names, and a marker.
TREE="$WORK/tree"
for bin in /bin/sh /bin/ls /bin/cat /bin/touch; do
  for f in $bin $(ldd $bin | grep -o '/[^ ]*'); do
    mkdir -p "$TREE$(dirname $f)"; cp -L "$f" "$TREE$f"
  done
done
echo tiny >"$TREE/rootfs-marker"
tar -C "$TREE" -czf "$IMAGES/tiny.tar.gz" .
SHA=$(sha256sum "$IMAGES/tiny.tar.gz" | cut -d' ' -f1)
cp "$IMAGES/tiny.tar.gz" "$OUTSIDE/tiny.tar.gz"

# Hostile tarballs, with names GNU tar would refuse to write.
python3 - "$IMAGES" "$OUTSIDE" <<'PY'
import io, sys, tarfile
images, outside = sys.argv[1], sys.argv[2]
def make(name, members):
    with tarfile.open(f"{images}/{name}.tar", "w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            info = tarfile.TarInfo(m["name"]); info.type = m.get("type", tarfile.REGTYPE)
            info.linkname = m.get("link", ""); data = m.get("data", b"x")
            if info.type == tarfile.REGTYPE: info.size = len(data); t.addfile(info, io.BytesIO(data))
            else:
                if info.type == tarfile.CHRTYPE: info.devmajor, info.devminor = 1, 1
                t.addfile(info)
make("dotdot", [{"name": "bin/ok"}, {"name": "../../outside/pwned"}])
make("absolute", [{"name": outside + "/pwned"}])
make("symlink", [{"name": "esc", "type": tarfile.SYMTYPE, "link": outside}, {"name": "esc/pwned"}])
make("device", [{"name": "dev/mem", "type": tarfile.CHRTYPE}])
PY

"$FOXDEN_BIN/foxden" token create --worker $NODE --kubeconfig "$KUBECONFIG_FILE" >"$WORK/worker.kubeconfig"
# The host's root binds without /etc: a task on the host tree must not see it.
"$FOXDEN_BIN/foxden-agent" --kubeconfig "$WORK/worker.kubeconfig" --name $NODE --data-dir "$AGENT_DATA" \
  --heartbeat-ms 500 --root-bind /bin --root-bind /lib --root-bind /lib64 --root-bind /usr --root-bind /sbin \
  --rootfs-dir "$IMAGES" --host-volume "$HOSTVOL" >>"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
trap 'kill -9 $AGENT_PID 2>/dev/null || true; for d in /sys/fs/cgroup/*/foxden-$NODE; do rmdir "$d"/* "$d" 2>/dev/null || true; done; cleanup' EXIT

alloc() {  # alloc NAME TASKS_JSON [VOLUMES_JSON]
  k 1.32 apply -f - >/dev/null <<JSON
{"apiVersion":"foxden.io/v1alpha1","kind":"Allocation",
 "metadata":{"name":"$1","namespace":"default","labels":{"foxden.io/worker":"$NODE"}},
 "spec":{"workerName":"$NODE","jobName":"rootfs","groupName":"g","index":0,
         "restartPolicy":{"attempts":0,"mode":"Fail"},"tasks":$2,"volumes":${3:-[]}}}
JSON
}
msg() { jp allocation "$1" '{.status.tasks[*].message}'; }
out() { cat "$AGENT_DATA"/allocs/$(jp allocation "$1" '{.metadata.uid}')/${2:-main}/logs/stdout* 2>/dev/null; }
expect_start_error() {  # expect_start_error NAME TEXT
  wait_for "$1 fails" phase_is "$1" Failed
  if jp allocation "$1" '{.status.tasks[*].reason}' | grep -q StartError && msg "$1" | grep -q -- "$2"; then pass
  else fail "$1: StartError with '$2', got: $(jp allocation "$1" '{.status.tasks[*].reason}') $(msg "$1")"; fi
}
rootfs() { echo '"rootfs":{"path":"'"$1"'","sha256":"'"$2"'"}'; }

# --root-bind: the host tree minus /etc.
alloc host '[{"name":"main","command":["/bin/sh","-c","ls /"]}]'
wait_for "host-root task completes" phase_is host Succeeded
o=$(out host)
echo "$o" | grep -qx usr && ! echo "$o" | grep -qx etc && pass || fail "--root-bind root: $o"

# A rootfs task sees exactly the tarball's tree plus the driver's mounts.
alloc rfs1 '[{"name":"main","command":["/bin/sh","-c","ls /; cat /rootfs-marker; touch /local/w && echo local-ok"],'"$(rootfs "$IMAGES/tiny.tar.gz" $SHA)"'}]'
wait_for "rootfs task completes" phase_is rfs1 Succeeded
o=$(out rfs1)
want="alloc bin dev lib lib64 local proc rootfs-marker secrets tmp tiny local-ok"
[ "$(echo $o)" = "$want" ] && pass || fail "rootfs task's view: '$(echo $o)', want '$want'"
CACHE="$AGENT_DATA/rootfs/$SHA"
ino=$(stat -c %i "$CACHE" 2>/dev/null || echo none)
[ "$ino" != none ] && pass || fail "cache dir $CACHE"

# The same digest again: the cache is reused, no second unpack.
alloc rfs2 '[{"name":"main","command":["/bin/cat","/rootfs-marker"],'"$(rootfs "$IMAGES/tiny.tar.gz" $SHA)"'}]'
wait_for "second rootfs task completes" phase_is rfs2 Succeeded
[ "$(out rfs2)" = tiny ] && pass || fail "second rootfs task: $(out rfs2)"
n=$(grep -c "rootfs unpacked sha256=$SHA" "$WORK/agent.log" || true)
[ "$n" = 1 ] && pass || fail "unpacks of $SHA: $n (want 1)"
[ "$(stat -c %i "$CACHE")" = "$ino" ] && pass || fail "cache dir replaced"
# The tree is read-only in the task, even for root.
alloc rfs-ro '[{"name":"main","user":"root","command":["/bin/sh","-c","touch /rootfs-marker /bin/x 2>/dev/null && echo WROTE || echo READONLY"],'"$(rootfs "$IMAGES/tiny.tar.gz" $SHA)"'}]'
wait_for "read-only rootfs task completes" phase_is rfs-ro Succeeded
[ "$(out rfs-ro)" = READONLY ] && pass || fail "rootfs writable: $(out rfs-ro)"

# Wrong digest, missing file, a file outside --rootfs-dir (directly and through "..").
alloc rfs-sha '[{"name":"main","command":["/bin/true"],'"$(rootfs "$IMAGES/tiny.tar.gz" $(printf 'a%.0s' $(seq 64)))"'}]'
expect_start_error rfs-sha "sha256 mismatch"
alloc rfs-missing '[{"name":"main","command":["/bin/true"],'"$(rootfs "$IMAGES/none.tar.gz" $SHA)"'}]'
expect_start_error rfs-missing "No such file"
alloc rfs-outside '[{"name":"main","command":["/bin/true"],'"$(rootfs "$OUTSIDE/tiny.tar.gz" $SHA)"'}]'
expect_start_error rfs-outside "not under an allowed rootfs directory"
alloc rfs-dots '[{"name":"main","command":["/bin/true"],'"$(rootfs "$IMAGES/../outside/tiny.tar.gz" $SHA)"'}]'
expect_start_error rfs-dots "not under an allowed rootfs directory"

# Hostile tarballs: refused, nothing outside, no cache entry.
for h in dotdot:"'..'" absolute:absolute symlink:symlink device:"device nodes"; do
  name=${h%%:*}; why=${h#*:}
  alloc rfs-$name '[{"name":"main","command":["/bin/true"],'"$(rootfs "$IMAGES/$name.tar" $(sha256sum "$IMAGES/$name.tar" | cut -d' ' -f1))"'}]'
  expect_start_error rfs-$name "$why"
done
[ -z "$(ls -A "$OUTSIDE" | grep -v '^tiny.tar.gz$')" ] && [ ! -e "$WORK/pwned" ] && pass || fail "hostile tarball wrote outside: $(ls -A "$OUTSIDE")"
[ "$(ls -A "$AGENT_DATA/rootfs")" = "$SHA" ] && pass || fail "cache holds more than the good tree: $(ls -A "$AGENT_DATA/rootfs")"

# emptyDir: written by a prestart task, read by the main task of the same allocation.
alloc vol-empty '[{"name":"writer","lifecycle":{"hook":"prestart"},"command":["/bin/sh","-c","echo shared > /data/f"],
                   "volumeMounts":[{"name":"scratch","mountPath":"/data"}]},
                  {"name":"main","command":["/bin/cat","/data/f"],"volumeMounts":[{"name":"scratch","mountPath":"/data"}]}]' \
  '[{"name":"scratch","emptyDir":{}}]'
wait_for "emptyDir allocation completes" phase_is vol-empty Succeeded
[ "$(out vol-empty)" = shared ] && pass || fail "emptyDir not shared: $(out vol-empty) $(msg vol-empty)"

# hostPath under --host-volume: writable, and readOnly enforced (directory mode 0777 on the host).
alloc vol-host '[{"name":"main","command":["/bin/sh","-c","echo from-task > /hv/out; touch /ro/x 2>/dev/null && echo WROTE || echo READONLY"],
                  "volumeMounts":[{"name":"share","mountPath":"/hv"},{"name":"ro","mountPath":"/ro","readOnly":true}]}]' \
  '[{"name":"share","hostPath":{"path":"'"$HOSTVOL/share"'"}},{"name":"ro","hostPath":{"path":"'"$HOSTVOL/ro"'"}}]'
wait_for "hostPath allocation completes" phase_is vol-host Succeeded
[ "$(cat "$HOSTVOL/share/out" 2>/dev/null)" = from-task ] && pass || fail "hostPath write: $(msg vol-host)"
[ "$(out vol-host)" = READONLY ] && [ ! -e "$HOSTVOL/ro/x" ] && pass || fail "readOnly hostPath: $(out vol-host)"
# A group-level readOnly applies to every mount of the volume; volumes also work in a rootfs root.
alloc vol-rootfs '[{"name":"main","command":["/bin/sh","-c","cat /hv/out; touch /hv/y 2>/dev/null && echo WROTE || echo READONLY"],
                    "volumeMounts":[{"name":"share","mountPath":"/hv"}],'"$(rootfs "$IMAGES/tiny.tar.gz" $SHA)"'}]' \
  '[{"name":"share","readOnly":true,"hostPath":{"path":"'"$HOSTVOL/share"'"}}]'
wait_for "hostPath in a rootfs completes" phase_is vol-rootfs Succeeded
[ "$(echo $(out vol-rootfs))" = "from-task READONLY" ] && pass || fail "group readOnly in rootfs: $(out vol-rootfs) $(msg vol-rootfs)"

# Refused: outside the allow-list, a symlink out of it, a missing volume, reserved mount paths.
alloc vol-out '[{"name":"main","command":["/bin/true"],"volumeMounts":[{"name":"v","mountPath":"/v"}]}]' \
  '[{"name":"v","hostPath":{"path":"'"$OUTSIDE"'"}}]'
expect_start_error vol-out "not under an allowed host volume directory"
alloc vol-link '[{"name":"main","command":["/bin/sh","-c","touch /v/pwned"],"volumeMounts":[{"name":"v","mountPath":"/v"}]}]' \
  '[{"name":"v","hostPath":{"path":"'"$HOSTVOL/escape"'"}}]'
expect_start_error vol-link "resolves to $OUTSIDE"
alloc vol-dots '[{"name":"main","command":["/bin/true"],"volumeMounts":[{"name":"v","mountPath":"/v"}]}]' \
  '[{"name":"v","hostPath":{"path":"'"$HOSTVOL/../outside"'"}}]'
expect_start_error vol-dots "not under an allowed host volume directory"
alloc vol-none '[{"name":"main","command":["/bin/true"],"volumeMounts":[{"name":"nope","mountPath":"/v"}]}]'
expect_start_error vol-none 'no volume named "nope"'
alloc vol-proc '[{"name":"main","command":["/bin/true"],"volumeMounts":[{"name":"v","mountPath":"/proc/sys"}]}]' \
  '[{"name":"v","emptyDir":{}}]'
expect_start_error vol-proc "must not be on or under /proc"
alloc vol-local '[{"name":"main","command":["/bin/true"],"volumeMounts":[{"name":"v","mountPath":"/local"}]}]' \
  '[{"name":"v","emptyDir":{}}]'
expect_start_error vol-local "must not be on or under /local"
alloc vol-up '[{"name":"main","command":["/bin/true"],"volumeMounts":[{"name":"v","mountPath":"/x/../etc"}]}]' \
  '[{"name":"v","emptyDir":{}}]'
expect_start_error vol-up "'..'"
[ ! -e "$OUTSIDE/pwned" ] && pass || fail "a volume wrote outside the allow-list"

kill -0 $AGENT_PID 2>/dev/null && pass || fail "agent alive"
finish
