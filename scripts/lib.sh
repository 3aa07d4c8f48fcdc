# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts sourcing it
# Shared helpers for the dev-stack scripts. Sourced, never run directly.
#
# Everything lives under the repo root: installs in .venv/ and var/{bin,kafka/libs},
# data in var/{redis,kafka/data,ferretdb}, logs in var/log/, runtime files in var/run/.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$ROOT/var"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMPS="$VAR/install"           # install stamps (kept by `make clean`)
SUPERVISOR_CONF="$ROOT/supervisord.conf"

KAFKA_VERSION=4.1.1
FERRETDB_VERSION=v1.24.2

# Defaults of PROTOCOL §12.
DEFAULT_REDIS_URL="redis://127.0.0.1:6379/0"
DEFAULT_KAFKA_BOOTSTRAP="127.0.0.1:9092"
DEFAULT_MONGO_URL="mongodb://127.0.0.1:27017/realtime"

# Toolchains may live outside a minimal PATH (CI runs with the machine's environment).
for _d in /usr/local/go/bin /usr/sbin /sbin; do
  case ":$PATH:" in *":$_d:"*) ;; *) [ -d "$_d" ] && PATH="$PATH:$_d" ;; esac
done
export PATH
unset _d

log()  { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- endpoints

# The URL/bootstrap of a backing service: the caller's env var, else the default.
service_url() {
  case "$1" in
    redis)    printf '%s' "${REDIS_URL:-$DEFAULT_REDIS_URL}" ;;
    kafka)    printf '%s' "${KAFKA_BOOTSTRAP:-$DEFAULT_KAFKA_BOOTSTRAP}" ;;
    ferretdb) printf '%s' "${MONGO_URL:-$DEFAULT_MONGO_URL}" ;;
    *) die "unknown service $1" ;;
  esac
}

# "host port" of the first server named by a Redis URL, a Kafka bootstrap list or a
# MongoDB URL (scheme, credentials, db, options and further hosts are ignored).
endpoint_of() {
  local def s="$2" host port=""
  case "$1" in redis) def=6379 ;; kafka) def=9092 ;; ferretdb) def=27017 ;; esac
  s="${s#*://}"; s="${s%%/*}"; s="${s%%\?*}"; s="${s##*@}"; s="${s%%,*}"
  if [[ "$s" == \[* ]]; then            # [ipv6]:port
    host="${s%%]*}"; host="${host#[}"; port="${s#*]}"; port="${port#:}"
  else
    host="${s%%:*}"; [[ "$s" == *:* ]] && port="${s##*:}"
  fi
  [[ "${port:-$def}" =~ ^[0-9]+$ ]] || return 1
  printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$def}"
}

is_loopback() { case "$1" in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }

# True when something accepts a TCP connection on host:port within ~1 s.
tcp_open() {
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# ---------------------------------------------------------------- supervisord

sctl() { "$VENV/bin/supervisorctl" -c "$SUPERVISOR_CONF" "$@"; }

supervisord_running() {
  [ -x "$VENV/bin/supervisorctl" ] || return 1
  [ -S "$VAR/run/supervisor.sock" ] || return 1
  sctl pid >/dev/null 2>&1
}

# State (RUNNING, STARTING, BACKOFF, FATAL, STOPPED, EXITED...) of group:name, or "NONE".
prog_state() {
  local s
  s="$(sctl status "$1" 2>/dev/null | awk -v n="$1" '$1==n {print $2}')" || true
  printf '%s' "${s:-NONE}"
}

# ---------------------------------------------------------------- service plan

# Decide for each backing service whether this stack runs it ("managed") or uses one
# that already answers ("external"). Sets PLAN_<svc>, HOST_<svc>, PORT_<svc>.
#   - ours already running under supervisord          -> managed
#   - something answers at the (env or default) URL   -> external: don't install/start
#   - nothing answers, address is on this machine     -> managed, on that port
#   - nothing answers, address is remote              -> error
plan_services() {
  local svc url hp host port status=""
  supervisord_running && status="$(sctl status 'services:*' 2>/dev/null)" || true
  for svc in redis kafka ferretdb; do
    url="$(service_url "$svc")"
    hp="$(endpoint_of "$svc" "$url")" || die "cannot parse the $svc address '$url'"
    host="${hp% *}"; port="${hp#* }"
    printf -v "HOST_$svc" '%s' "$host"
    printf -v "PORT_$svc" '%s' "$port"
    if awk -v n="services:$svc" '$1==n && $2=="RUNNING" {f=1} END {exit !f}' <<<"$status"; then
      printf -v "PLAN_$svc" managed
    elif tcp_open "$host" "$port"; then
      printf -v "PLAN_$svc" external
    elif is_loopback "$host"; then
      printf -v "PLAN_$svc" managed
    else
      die "$svc at $host:$port ($url) does not answer and is not on this machine; start it or unset the variable"
    fi
  done
}
