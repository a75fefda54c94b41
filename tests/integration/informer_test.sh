#!/usr/bin/env bash
# The kube/ informer against a real `foxden server`: paged list, live events, re-watch after
# timeoutSeconds, a partition long enough for its version to expire (410 -> relist), and a kill -9
# restart of the server; each time its cache must equal a fresh list.
source "$(dirname "$0")/lib/common.sh"
"$FOXDEN_BIN/kube_driver" informer --foxden "$FOXDEN_BIN/foxden" --crds "$FOXDEN_SRC/crds" --work "$WORK" \
  || FAILURES=$((FAILURES+1))
cp "$WORK/informer-data.log" "$WORK/server.log" 2>/dev/null || true
finish
