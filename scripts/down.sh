#!/usr/bin/env bash
# `make down`: stop every program and supervisord itself. Data in var/ stays.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

if ! supervisord_running; then
  log "dev stack is not running"
  exit 0
fi
pid="$(sctl pid)"
log "stopping the dev stack (supervisord pid $pid)"
# Apps first, so they do not log errors about services vanishing under them.
sctl stop 'app:*' >/dev/null 2>&1 || true
sctl shutdown >/dev/null
# shutdown only asks: wait until supervisord (and with it every program) has exited.
for _ in $(seq 1 120); do
  kill -0 "$pid" 2>/dev/null || { log "stopped"; exit 0; }
  sleep 0.5
done
die "supervisord (pid $pid) still running after 60 s"
