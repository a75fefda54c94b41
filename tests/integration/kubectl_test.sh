#!/usr/bin/env bash
# (kubectl 1.27 prints "annotate" where later minors print "annotated"; both are accepted.)
# Real kubectl, every minor shipped on this machine, against a real `foxden server`: apply
# (client- and server-side), get (table, yaml, json, selectors), get -w, describe, label, annotate,
# patch (merge, json), delete with a finalizer, wait, api-resources, explain - on a CRD-defined kind
# and on ConfigMaps - and schema errors as kubectl shows them.
source "$(dirname "$0")/lib/common.sh"

start_server
VERSIONS=${KUBECTL_VERSIONS:-$(ls "$KUBECTL_DIR" | sed -n 's/^kubectl\.\(1\.[0-9]*\)$/\1/p' | sort -V)}
[ -n "$VERSIONS" ] || { echo "no kubectl.1.* found in $KUBECTL_DIR"; exit 1; }

k 1.32 apply -f "$TESTDATA/widgets-crd.yaml" >/dev/null
k 1.32 wait --for=condition=Established crd/widgets.example.com --timeout=30s >/dev/null

for v in $VERSIONS; do
  echo "== kubectl $v"
  ns="kubectl-${v/./-}"
  # kubectl's typed generators send protobuf bodies.
  expect_contains "$v create ns" "namespace/$ns created" k "$v" create namespace "$ns"
  K=(k "$v" -n "$ns")

  # --- custom resource -------------------------------------------------------------------
  expect_contains "$v apply creates" "widget.example.com/w1 created" "${K[@]}" apply -f "$TESTDATA/widget-w1.yaml"
  expect_contains "$v apply unchanged" "widget.example.com/w1 unchanged" "${K[@]}" apply -f "$TESTDATA/widget-w1.yaml"
  sed 's/size: 3/size: 5/' "$TESTDATA/widget-w1.yaml" >"$WORK/w1-$v.yaml"
  expect_contains "$v apply updates" "widget.example.com/w1 configured" "${K[@]}" apply -f "$WORK/w1-$v.yaml"
  expect_contains "$v updated value" "5" "${K[@]}" get wg w1 -o jsonpath='{.spec.size}'
  expect_contains "$v generation bumped" "2" "${K[@]}" get wg w1 -o jsonpath='{.metadata.generation}'
  expect_contains "$v ssa creates" "widget.example.com/w2 serverside-applied" "${K[@]}" apply --server-side -f "$TESTDATA/widget-w2.yaml"
  sed 's/size: 4/size: 6/' "$TESTDATA/widget-w2.yaml" >"$WORK/w2-$v.yaml"
  expect_contains "$v ssa updates" "serverside-applied" "${K[@]}" apply --server-side -f "$WORK/w2-$v.yaml"
  expect_contains "$v ssa value" "6" "${K[@]}" get widget w2 -o jsonpath='{.spec.size}'
  expect_contains "$v default applied" "red" "${K[@]}" get widgets.example.com w2 -o jsonpath='{.spec.color}'

  out=$("${K[@]}" get wg 2>&1 || true)
  if grep -q '^NAME *SIZE *COLOR *READY *AGE' <<<"$out" && grep -q '^w1 *5 *blue' <<<"$out"; then pass; else fail "$v table columns"; echo "$out" >&2; fi
  expect_contains "$v -o yaml" "kind: Widget" "${K[@]}" get wg w1 -o yaml
  out=$("${K[@]}" get wg w1 -o json 2>&1 || true)
  if [ "$(jq -r '.spec.color' <<<"$out" 2>/dev/null)" = "blue" ]; then pass; else fail "$v -o json"; echo "$out" >&2; fi
  out=$("${K[@]}" get wg -l tier=back -o name 2>&1 || true)
  if [ "$out" = "widget.example.com/w2" ]; then pass; else fail "$v -l equality"; echo "$out" >&2; fi
  out=$("${K[@]}" get wg -l 'tier in (front,middle)' -o name 2>&1 || true)
  if [ "$out" = "widget.example.com/w1" ]; then pass; else fail "$v -l set"; echo "$out" >&2; fi
  expect_contains "$v get foxden-less category" "w1" "${K[@]}" get examples
  expect_contains "$v -A" "$ns" k "$v" get wg -A

  # get -w sees a change made after it started.
  "${K[@]}" get wg w1 -w --output-watch-events -o json >"$WORK/watch-$v.out" 2>&1 &
  wpid=$!
  sleep 1
  "${K[@]}" patch wg w1 --type merge -p '{"spec":{"size":7}}' >/dev/null
  for _ in $(seq 1 100); do grep -q MODIFIED "$WORK/watch-$v.out" && break; sleep 0.1; done
  kill $wpid 2>/dev/null; wait $wpid 2>/dev/null || true
  if grep -q "MODIFIED" "$WORK/watch-$v.out"; then pass; else fail "$v get -w"; cat "$WORK/watch-$v.out" >&2; fi

  expect_contains "$v describe" "Size:   7" "${K[@]}" describe wg w1
  expect_contains "$v label" "labeled" "${K[@]}" label wg w1 stage=canary
  expect_contains "$v label visible" "canary" "${K[@]}" get wg -l stage=canary --show-labels
  expect_contains "$v annotate" "annotate" "${K[@]}" annotate wg w1 note=hello
  expect_contains "$v annotation visible" "hello" "${K[@]}" get wg w1 -o jsonpath='{.metadata.annotations.note}'
  expect_contains "$v patch merge" "patched" "${K[@]}" patch wg w1 --type merge -p '{"spec":{"color":"green"}}'
  expect_contains "$v patch json" "patched" "${K[@]}" patch wg w1 --type json -p '[{"op":"replace","path":"/spec/size","value":2}]'
  expect_contains "$v patched values" "2 green" "${K[@]}" get wg w1 -o jsonpath='{.spec.size} {.spec.color}'

  # status subresource + wait
  check "$v status patch" "${K[@]}" patch wg w1 --subresource=status --type merge \
    -p '{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Test","message":"ok"}]}}'
  expect_contains "$v wait condition" "condition met" "${K[@]}" wait --for=condition=Ready wg/w1 --timeout=30s
  expect_contains "$v ready column" "True" "${K[@]}" get wg w1

  # delete with a finalizer: lingers with deletionTimestamp until the finalizer goes.
  check "$v add finalizer" "${K[@]}" patch wg w2 --type merge -p '{"metadata":{"finalizers":["example.com/hold"]}}'
  check "$v delete (pending)" "${K[@]}" delete wg w2 --wait=false
  expect_contains "$v deletionTimestamp" "Z" "${K[@]}" get wg w2 -o jsonpath='{.metadata.deletionTimestamp}'
  check "$v remove finalizer" "${K[@]}" patch wg w2 --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'
  expect_fail_contains "$v gone after finalizer" "NotFound" "${K[@]}" get wg w2

  # schema violations: 422 naming the field, nothing stored
  expect_fail_contains "$v schema max" "spec.size: Invalid value: 100" "${K[@]}" apply -f "$TESTDATA/widget-bad.yaml"
  expect_fail_contains "$v schema enum" 'spec.color: Unsupported value: "purple"' "${K[@]}" create -f "$TESTDATA/widget-bad.yaml"
  expect_fail_contains "$v bad not stored" "NotFound" "${K[@]}" get wg bad

  # --- ConfigMap ---------------------------------------------------------------------------
  expect_contains "$v cm apply creates" "configmap/settings created" "${K[@]}" apply -f "$TESTDATA/configmap.yaml"
  sed 's/mode: fast/mode: slow/' "$TESTDATA/configmap.yaml" >"$WORK/cm-$v.yaml"
  expect_contains "$v cm apply updates" "configmap/settings configured" "${K[@]}" apply -f "$WORK/cm-$v.yaml"
  expect_contains "$v cm value" "slow" "${K[@]}" get cm settings -o jsonpath='{.data.mode}'
  sed 's/settings/settings-ssa/' "$TESTDATA/configmap.yaml" >"$WORK/cm-ssa-$v.yaml"
  expect_contains "$v cm ssa" "serverside-applied" "${K[@]}" apply --server-side -f "$WORK/cm-ssa-$v.yaml"
  out=$("${K[@]}" get cm 2>&1 || true)
  if grep -q '^NAME *DATA *AGE' <<<"$out" && grep -q '^settings *2 ' <<<"$out"; then pass; else fail "$v cm table"; echo "$out" >&2; fi
  expect_contains "$v cm yaml" "kind: ConfigMap" "${K[@]}" get cm settings -o yaml
  expect_contains "$v cm json" '"mode": "slow"' "${K[@]}" get cm settings -o json
  expect_contains "$v cm selector" "settings" "${K[@]}" get cm -l app=demo
  expect_contains "$v cm describe" "mode" "${K[@]}" describe cm settings
  expect_contains "$v cm label" "labeled" "${K[@]}" label cm settings env=test
  expect_contains "$v cm annotate" "annotate" "${K[@]}" annotate cm settings owner=me
  expect_contains "$v cm patch merge" "patched" "${K[@]}" patch cm settings --type merge -p '{"data":{"extra":"x"}}'
  expect_contains "$v cm patch json" "patched" "${K[@]}" patch cm settings --type json -p '[{"op":"remove","path":"/data/extra"}]'
  expect_contains "$v cm patch strategic" "patched" "${K[@]}" patch cm settings -p '{"data":{"s":"1"}}'
  "${K[@]}" get cm settings -w --output-watch-events -o json >"$WORK/cmwatch-$v.out" 2>&1 &
  wpid=$!
  sleep 1
  "${K[@]}" label cm settings watched=yes >/dev/null
  for _ in $(seq 1 100); do grep -q MODIFIED "$WORK/cmwatch-$v.out" && break; sleep 0.1; done
  kill $wpid 2>/dev/null; wait $wpid 2>/dev/null || true
  if grep -q "MODIFIED" "$WORK/cmwatch-$v.out"; then pass; else fail "$v cm get -w"; cat "$WORK/cmwatch-$v.out" >&2; fi
  check "$v cm finalizer" "${K[@]}" patch cm settings --type merge -p '{"metadata":{"finalizers":["example.com/hold"]}}'
  check "$v cm delete pending" "${K[@]}" delete cm settings --wait=false
  expect_contains "$v cm lingers" "Z" "${K[@]}" get cm settings -o jsonpath='{.metadata.deletionTimestamp}'
  check "$v cm release" "${K[@]}" patch cm settings --type merge -p '{"metadata":{"finalizers":null}}'
  expect_fail_contains "$v cm gone" "NotFound" "${K[@]}" get cm settings
  expect_contains "$v cm wait delete" "deleted" "${K[@]}" delete cm settings-ssa
  expect_contains "$v wait --for=delete" "" "${K[@]}" wait --for=delete cm/settings-ssa --timeout=10s

  expect_contains "$v create cm (protobuf)" "configmap/lit created" "${K[@]}" create configmap lit --from-literal=a=1
  expect_contains "$v create secret (protobuf)" "secret/sec created" "${K[@]}" create secret generic sec --from-literal=k=v
  expect_contains "$v secret data" "dg==" "${K[@]}" get secret sec -o jsonpath='{.data.k}'

  # --- discovery and explain -------------------------------------------------------------
  expect_contains "$v api-resources" "widgets" k "$v" api-resources
  expect_contains "$v api-resources foxden" "allocations" k "$v" api-resources --api-group=foxden.io
  expect_contains "$v explain CR" "How big the widget is" k "$v" explain widgets.spec.size
  expect_contains "$v explain CR top" "test resource" k "$v" explain widget
  expect_contains "$v explain cm" "BinaryData" k "$v" explain configmap

  expect_contains "$v delete ns" "deleted" k "$v" delete namespace "$ns" --wait=true --timeout=60s
done
finish
