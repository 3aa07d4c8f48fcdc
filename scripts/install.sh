#!/usr/bin/env bash
# shellcheck disable=SC2154  # PLAN_*, HOST_*, PORT_* are set by plan_services (printf -v)
# Install what the dev stack needs, and only that. Idempotent and fast when done:
# every step checks a stamp or the installed binary first.
#
#   scripts/install.sh          install what `make up` will run here
#   scripts/install.sh --all    install everything, even services that already answer
#
# Debian packages (nginx, redis-server), the Python venv, the JS test deps, Kafka jars
# (Maven Central) and a FerretDB binary (built from the Go module proxy).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ALL=0
[ "${1:-}" = "--all" ] && ALL=1

mkdir -p "$STAMPS" "$VAR/bin"

sha() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1; }
stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
# Run a step; report its duration when it did real work (took a second or more).
timed() { local t0=$SECONDS; "$@"; [ $((SECONDS - t0)) -lt 1 ] || log "$1 took $((SECONDS - t0)) s"; }

# ---------------------------------------------------------------- Python venv
# Comes first: later steps and up.sh's readiness checks use its packages.
install_venv() {
  local want; want="$(sha requirements.txt)"
  if [ -x "$PY" ] && "$PY" -c '' 2>/dev/null && stamp_ok requirements "$want"; then
    return 0
  fi
  log "Python venv (.venv) from requirements.txt"
  if ! { [ -x "$PY" ] && "$PY" -c '' 2>/dev/null; }; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --disable-pip-version-check --no-input -r requirements.txt
  printf '%s' "$want" >"$STAMPS/requirements"
}

# ---------------------------------------------------------------- Debian packages
install_apt() {
  local pkgs=()
  command -v nginx >/dev/null || pkgs+=(nginx)
  if [ "$ALL" = 1 ] || [ "$PLAN_redis" = managed ]; then
    command -v redis-server >/dev/null || pkgs+=(redis-server)
  fi
  [ ${#pkgs[@]} -eq 0 ] && return 0
  log "apt-get install ${pkgs[*]}"
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${pkgs[*]}"
  # Keep the packages' init scripts from starting system-wide nginx/redis: this stack
  # runs its own under supervisord. Only when no policy-rc.d exists already.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${pkgs[@]}"
  } >"$VAR/install/apt.log" 2>&1 || rc=$?
  [ "$made_policy" = 1 ] && rm -f "$policy"
  if [ "$rc" != 0 ]; then tail -n 30 "$VAR/install/apt.log" >&2; die "apt-get failed"; fi
}

# ---------------------------------------------------------------- Chromium (browser call test)
# tests/edge/test_call_browser.py drives Debian's chromium with playwright-core.
install_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  log "apt-get install chromium (for the browser call test)"
  [ "$(id -u)" = 0 ] || die "need root to apt-get install chromium"
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  } >"$VAR/install/apt-chromium.log" 2>&1 || { tail -n 30 "$VAR/install/apt-chromium.log" >&2; die "apt-get chromium failed"; }
}

# ---------------------------------------------------------------- JS deps
# tests/js: the official socket.io-client for the JS client tests.
# bench/node: the Node.js Socket.IO reference server and the load generator (make bench).
install_npm() {
  local dir="${1:-tests/js}" stamp="${2:-npm}"
  [ -f "$dir/package.json" ] || return 0
  local want; want="$(sha "$dir/package.json" "$dir/package-lock.json")"
  if [ -d "$dir/node_modules" ] && stamp_ok "$stamp" "$want"; then return 0; fi
  log "npm packages for $dir"
  if [ -f "$dir/package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
  else
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error
  fi
  # `npm install` may have written a lock file: hash again.
  sha "$dir/package.json" "$dir/package-lock.json" >"$STAMPS/$stamp"
}
install_bench_npm() {
  command -v npm >/dev/null || { log "npm not found: skipping bench/node (make bench needs it)"; return 0; }
  install_npm bench/node npm-bench
}

# ---------------------------------------------------------------- Kafka jars
install_kafka() {
  local libs="$VAR/kafka/libs" want; want="$(sha deploy/kafka/pom.xml)"
  if [ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ] && stamp_ok kafka "$want"; then return 0; fi
  log "Kafka $KAFKA_VERSION jars (Maven Central) into var/kafka/libs"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  [ -f "$libs/kafka_2.13-$KAFKA_VERSION.jar" ] || die "Kafka jars missing after mvn"
  printf '%s' "$want" >"$STAMPS/kafka"
}

# ---------------------------------------------------------------- FerretDB binary
install_ferretdb() {
  local bin="$VAR/bin/ferretdb"
  # Rebuilt when the version or the patches change.
  # (not `--version | grep -q`: with pipefail, grep's early exit can SIGPIPE the binary
  # and make an installed FerretDB look missing, which then needs the network to rebuild)
  local want; want="$FERRETDB_VERSION $(sha deploy/ferretdb/*.patch)"
  if [ -x "$bin" ] && grep -q "$FERRETDB_VERSION" <<<"$("$bin" --version 2>/dev/null)" &&
     stamp_ok ferretdb "$want"; then return 0; fi
  log "FerretDB $FERRETDB_VERSION (go build; about 2 min the first time)"
  export GOTOOLCHAIN=local   # never fetch another Go toolchain
  local tmp dir
  tmp="$(mktemp -d)"
  # `go install ...@version` builds a binary that panics at start: the module zip lacks
  # build/version/version.txt (embedded). Build from a writable copy with that file.
  dir="$(cd "$tmp" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cp -r "$dir" "$tmp/src"
  chmod -R u+w "$tmp/src"
  printf '%s' "$FERRETDB_VERSION" >"$tmp/src/build/version/version.txt"
  # Our patches (deploy/ferretdb/README.md says what each fixes and why).
  local patch
  for patch in "$PWD"/deploy/ferretdb/*.patch; do
    (cd "$tmp/src" && git apply "$patch") || die "FerretDB patch $patch does not apply"
  done
  # The tests of the package our decoding patch changes (its own test included): a
  # patch that breaks FerretDB's decoding must stop the install, not corrupt reads.
  # (FerretDB's test helpers find the source's root by its .git directory.)
  (cd "$tmp/src" && git init -q && go test ./internal/handler/sjson/) || die "FerretDB's sjson tests fail with our patches"
  (cd "$tmp/src" && go build -o "$bin.new" ./cmd/ferretdb)
  mv "$bin.new" "$bin"
  rm -rf "$tmp"
  grep -q "$FERRETDB_VERSION" <<<"$("$bin" --version)" || die "built FerretDB does not report $FERRETDB_VERSION"
  printf '%s' "$want" >"$STAMPS/ferretdb"
}

# ---------------------------------------------------------------- main
plan_services
timed install_venv
timed install_apt
timed install_npm
timed install_chromium
timed install_bench_npm
if [ "$ALL" = 1 ] || [ "$PLAN_kafka" = managed ]; then timed install_kafka
else log "Kafka: using the one at $HOST_kafka:$PORT_kafka, nothing to install"; fi
if [ "$ALL" = 1 ] || [ "$PLAN_ferretdb" = managed ]; then timed install_ferretdb
else log "MongoDB: using the one at $HOST_ferretdb:$PORT_ferretdb, nothing to install"; fi
if [ "$ALL" = 0 ] && [ "$PLAN_redis" = external ]; then
  log "Redis: using the one at $HOST_redis:$PORT_redis, nothing to install"
fi
