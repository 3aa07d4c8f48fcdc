#!/usr/bin/env bash
# `make test [ARGS=...]`: bring the stack up with short timings, then run pytest.
#   scripts/test.sh [PYTEST ARGS...]
# Timings the caller set are kept; the others get test values so timeouts are quick.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

export AUTH_GRACE_S="${AUTH_GRACE_S:-2}"
export PRESENCE_OFFLINE_GRACE_S="${PRESENCE_OFFLINE_GRACE_S:-1}"
export PRESENCE_NODE_TIMEOUT_S="${PRESENCE_NODE_TIMEOUT_S:-4}"
export TYPING_EXPIRY_S="${TYPING_EXPIRY_S:-2}"
export RECEIPT_WINDOW_S="${RECEIPT_WINDOW_S:-1}"
export PUSH_COALESCE_S="${PUSH_COALESCE_S:-1}"
export CALL_RING_TIMEOUT_S="${CALL_RING_TIMEOUT_S:-3}"
export CALL_RECONNECT_GRACE_S="${CALL_RECONNECT_GRACE_S:-2}"

bash "$ROOT/scripts/up.sh"

# pytest runs with the stack's settings (var/stack.env) exported, like the apps.
# Default target tests/; when the arguments name test paths (make test ARGS=tests/edge),
# only those run.
targets=(tests)
for a in "$@"; do
  case "$a" in -*) ;; *) [ -e "${a%%::*}" ] && targets=() ;; esac
done
rc=0
bin/with-env "$PY" -m pytest -q -ra "${targets[@]}" "$@" || rc=$?
case "$rc" in
  0) ;;
  5) echo "ERROR: pytest collected no tests (exit 5)" >&2 ;;
  *) echo "ERROR: pytest failed (exit $rc)" >&2 ;;
esac
exit "$rc"
