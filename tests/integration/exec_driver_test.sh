#!/usr/bin/env bash
# The exec and raw_exec task drivers against this host's real cgroups and namespaces (root only):
# isolation battery, limits (memory, pids, cpu), stop with kill timeout, re-attach after a driver
# restart, raw_exec, and device isolation with fake GPU nodes. See exec_driver_check.cc.
source "$(dirname "$0")/lib/common.sh"
"$FOXDEN_BIN/exec_driver_check" || FAILURES=$((FAILURES+1))
finish
