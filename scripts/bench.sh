#!/usr/bin/env bash
# `make bench [ARGS=...]`: the side-by-side benchmark of issue 7 (bench/run.py).
# Run it in the stack's network namespace, with the stack up (`make up`): it uses the
# stack's Redis, MongoDB and Kafka, and starts its own edge and Node.js server processes
# on ports 5101-5203 (Redis channel "bench-socketio" / key prefix "bench-node", so
# nothing mixes with the stack's edges). While it runs, the stack's own app programs are
# stopped so that they do not compete for the CPU; they are started again afterwards.
#   scripts/bench.sh [--quick] [--only W2,W4] [--servers edge,node] ...
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

[ -d bench/node/node_modules ] || die "bench/node/node_modules missing: run scripts/install.sh --all"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ctl() { "$VENV/bin/supervisorctl" -c supervisord.conf "$@"; }
stopped=0
if [ "${BENCH_KEEP_APP:-0}" != 1 ]; then ctl stop app: >/dev/null 2>&1 && stopped=1 || true; fi
restore() { [ "$stopped" = 1 ] && ctl start app: >/dev/null 2>&1 || true; }
trap restore EXIT
mkdir -p bench/results
echo "machine: $(nproc) CPUs; $(uptime)"
bin/with-env "$PY" -m bench.run "$@"
cp bench/results/report.md bench/results/report-"$(date -u +%Y%m%dT%H%M%SZ)".md
echo "results: bench/results/results.json, bench/results/report.md, bench/results/report.png"
