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

# Push providers: FCM and APNs point at local stand-ins the tests serve on fixed ports
# (devtools/push_servers.py), with credentials generated once into var/push-test/.
# Web Push needs nothing here: a subscription names its own endpoint.
# Installing first (idempotent; up.sh below finds it done): the credentials are made
# with the venv's Python, which a fresh clone does not have yet.
bash "$ROOT/scripts/install.sh"
PUSH_TEST="$ROOT/var/push-test"
if [ ! -s "$PUSH_TEST/fcm-service-account.json" ] || [ ! -s "$PUSH_TEST/apns-key.p8" ]; then
  mkdir -p "$PUSH_TEST"
  "$PY" -c 'import sys; from devtools import push_servers as p
p.make_fcm_credentials(sys.argv[1] + "/fcm-service-account.json", "rt-test", "http://127.0.0.1:18441/token")
p.make_apns_key(sys.argv[1] + "/apns-key.p8")' "$PUSH_TEST"
fi
export FCM_PROJECT_ID="${FCM_PROJECT_ID:-rt-test}"
export FCM_CREDENTIALS_FILE="${FCM_CREDENTIALS_FILE:-$PUSH_TEST/fcm-service-account.json}"
export FCM_ENDPOINT="${FCM_ENDPOINT:-http://127.0.0.1:18441}"
export FCM_TOKEN_URL="${FCM_TOKEN_URL:-http://127.0.0.1:18441/token}"
export APNS_KEY_FILE="${APNS_KEY_FILE:-$PUSH_TEST/apns-key.p8}"
export APNS_KEY_ID="${APNS_KEY_ID:-TESTKEY001}"
export APNS_TEAM_ID="${APNS_TEAM_ID:-TESTTEAM01}"
export APNS_TOPIC="${APNS_TOPIC:-com.example.chat}"
export APNS_ENDPOINT="${APNS_ENDPOINT:-http://127.0.0.1:18442}"

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
