#!/usr/bin/env bash
# Raw-HTTPS checks of `foxden server`: bad input and authorisation (401/403/409/413/415/422 and
# nothing changed), a fuzz run of mutated requests, watch resumption and 410, and durability
# across kill -9. The checks themselves live in api_checks.py (Python standard library only).
source "$(dirname "$0")/lib/common.sh"
python3 "$(dirname "$0")/api_checks.py" "$FOXDEN_BIN/foxden" "$FOXDEN_SRC/crds" "$WORK" || FAILURES=$((FAILURES+1))
finish
