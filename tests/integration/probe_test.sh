#!/usr/bin/env bash
# Exec probes inside real exec-driver tasks (root only): namespaces, root, uid, working directory,
# a file created by the host, timeout, ProbeRunner. See probe_check.cc.
source "$(dirname "$0")/lib/common.sh"
"$FOXDEN_BIN/probe_check" || FAILURES=$((FAILURES+1))
finish
