#!/usr/bin/env bash
# shellcheck disable=SC2154  # PLAN_*, HOST_*, PORT_* are set by plan_services (printf -v)
# `make up`: install what is missing, start the dev stack under supervisord, wait until
# every part is ready. Idempotent: on a running stack it only checks, and restarts the
# app programs when the settings in var/stack.env changed (e.g. `CALL_RING_TIMEOUT_S=3
# make up`). Backing services that already answer at REDIS_URL / KAFKA_BOOTSTRAP /
# MONGO_URL (or the defaults) are used as they are.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
T0=$SECONDS

APP_PROGRAMS=(edge1 edge2 worker worker_outbox worker_push beat flower kafka_fanout)
LB_PORT=8080
FLOWER_URL="http://127.0.0.1:5555"

# ------------------------------------------------------------------ install
bash "$ROOT/scripts/install.sh"
plan_services   # again: install.sh ran in a child process

mkdir -p "$VAR/run" "$VAR/log" "$VAR/redis" "$VAR/kafka/data" "$VAR/ferretdb" \
         "$VAR/nginx/tmp"

# ------------------------------------------------------------------ helpers

# Print the last lines of a program's log (and supervisord's view of it).
show_log() {
  local name="$1" file="$VAR/log/$1.log"
  echo "---- $(sctl status "$2" 2>/dev/null || true)" >&2
  if [ -f "$file" ]; then
    echo "---- last lines of var/log/$name.log:" >&2
    tail -n 40 "$file" >&2
  fi
  echo "----" >&2
}

# wait_ready NAME GROUP:PROG TIMEOUT_S CHECK...
# Polls CHECK until it succeeds. Fails at the timeout, or at once when supervisord gave
# up on the program (FATAL), showing the tail of the program's log.
wait_ready() {
  local name="$1" prog="$2" timeout="$3"; shift 3
  local deadline=$((SECONDS + timeout)) state
  until "$@" >/dev/null 2>&1; do
    if [ -n "$prog" ]; then
      state="$(prog_state "$prog")"
      case "$state" in
        FATAL) echo "ERROR: $name failed to start (supervisord state FATAL)" >&2
               show_log "$name" "$prog"; exit 1 ;;
        NONE)  die "supervisord has no program $prog (try: make down && make up)" ;;
      esac
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "ERROR: $name not ready after ${timeout}s (check: $*)" >&2
      [ -n "$prog" ] && show_log "$name" "$prog"
      exit 1
    fi
    sleep 0.5
  done
  log "$name ready"
}

# Readiness probes. Python from the venv: it has the clients, and needs nothing else.
probe() {
  "$PY" - "$@" <<'PY'
import base64, json, logging, sys, urllib.request, urllib.error
logging.disable(logging.CRITICAL)
kind, target = sys.argv[1], sys.argv[2]
if kind == "redis":
    import redis
    redis.Redis.from_url(target, socket_connect_timeout=2, socket_timeout=2).ping()
elif kind == "kafka":
    from kafka import KafkaAdminClient
    admin = KafkaAdminClient(bootstrap_servers=target, request_timeout_ms=3000)
    try:
        admin.list_topics()
    finally:
        admin.close()
elif kind == "mongo":
    import pymongo
    pymongo.MongoClient(target, serverSelectionTimeoutMS=2000).admin.command("ping")
elif kind in ("http200", "http_any", "flower_worker"):
    req = urllib.request.Request(target)
    auth = sys.argv[3] if len(sys.argv) > 3 else ""
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        if kind != "http_any":
            raise
        status, body = e.code, b""
    if kind == "http200" and status != 200:
        sys.exit(1)
    if kind == "flower_worker" and not any(w.startswith("worker1@") for w in json.loads(body)):
        sys.exit(1)
else:
    sys.exit(f"unknown probe {kind}")
PY
}

# Replace FILE with the content on stdin only when it differs (keeps mtimes meaningful).
write_if_changed() {
  local file="$1" tmp; tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp"
  if cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv "$tmp" "$file"; fi
}

# ------------------------------------------------------------------ var/stack.env

# Settings of PROTOCOL §12 passed through from the caller's environment when set.
PASS_VARS=(REDIS_URL REDIS_MAX_CONNECTIONS REDIS_POOL_WAIT_S KAFKA_BOOTSTRAP KAFKA_TOPIC_PREFIX MONGO_URL
  JWT_SECRET JWT_ALGORITHMS JWT_PUBLIC_KEYS JWT_AUDIENCE JWT_ISSUER DEV_MODE
  TURN_SECRET TURN_URLS STUN_URLS TURN_TTL_S
  PRESENCE_OFFLINE_GRACE_S PRESENCE_NODE_TIMEOUT_S TYPING_EXPIRY_S RECEIPT_WINDOW_S
  PUSH_COALESCE_S CALL_RING_TIMEOUT_S CALL_RECONNECT_GRACE_S AUTH_GRACE_S
  CORS_ALLOWED_ORIGINS FLOWER_BASIC_AUTH FANOUT_ROUTING)
PASS_PREFIXES='^(WEBPUSH|FCM|APNS|EDGE|RATE|LIMIT)_'

# One KEY=value line that bash can source: bare when the value is plain, else
# single-quoted ('\'' for a quote inside).
env_line() {
  local k="$1" v="$2"
  if [[ "$v" =~ ^[A-Za-z0-9_./:@,+=*%-]*$ ]]; then
    printf '%s=%s\n' "$k" "$v"
  else
    printf "%s='%s'\n" "$k" "${v//\'/\'\\\'\'}"
  fi
}

# The Web Push VAPID key pair is shared by every process and kept across runs (and
# `make clean`): generated once into var/vapid.env unless the caller brings one.
# Private key: base64url of the raw 32-byte P-256 scalar; public key: base64url of the
# 65-byte uncompressed point (the applicationServerKey browsers subscribe with).
ensure_vapid() {
  [ -s "$VAR/vapid.env" ] && return 0
  "$PY" - >"$VAR/vapid.env.tmp" <<'PY'
import base64
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = ec.generate_private_key(ec.SECP256R1())
print("WEBPUSH_VAPID_PRIVATE_KEY=" + b64(key.private_numbers().private_value.to_bytes(32, "big")))
print("WEBPUSH_VAPID_PUBLIC_KEY=" + b64(key.public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)))
PY
  mv "$VAR/vapid.env.tmp" "$VAR/vapid.env"
}

write_stack_env() {
  local k
  declare -A out=()
  local order=()
  put() { [ -n "${out[$1]+x}" ] || order+=("$1"); out[$1]="$2"; }

  # Dev defaults, overridden below by whatever the caller set.
  put DEV_MODE 1
  put JWT_SECRET dev-secret-do-not-use-in-production
  put CORS_ALLOWED_ORIGINS '*'
  # Resolved addresses of the backing services, always written so every reader agrees.
  put REDIS_URL "$(service_url redis)"
  put KAFKA_BOOTSTRAP "$(service_url kafka)"
  put MONGO_URL "$(service_url ferretdb)"
  if [ -z "${WEBPUSH_VAPID_PRIVATE_KEY:-}${WEBPUSH_VAPID_PUBLIC_KEY:-}" ]; then
    ensure_vapid
    while IFS='=' read -r k v; do put "$k" "$v"; done <"$VAR/vapid.env"
    put WEBPUSH_VAPID_SUBJECT "mailto:dev@example.com"
  fi

  for k in "${PASS_VARS[@]}"; do
    [ -n "${!k+x}" ] && put "$k" "${!k}"
  done
  while IFS= read -r k; do
    put "$k" "${!k}"
  done < <(compgen -e | grep -E "$PASS_PREFIXES" | sort)

  {
    echo "# Written by scripts/up.sh at every 'make up'; do not edit (set the variables"
    echo "# in the environment of 'make up' instead). Read by bin/with-env."
    for k in "${order[@]}"; do env_line "$k" "${out[$k]}"; done
  } | write_if_changed "$VAR/stack.env"
}

# ------------------------------------------------------------------ generated config

write_service_config() {
  # Ports for scripts/run-service.sh.
  {
    echo "REDIS_PORT=$PORT_redis"
    echo "MONGO_PORT=$PORT_ferretdb"
    # FerretDB's debug (metrics) listener, kept next to its default 8088.
    echo "FERRETDB_DEBUG_PORT=$(( PORT_ferretdb == 27017 ? 8088 : PORT_ferretdb + 1 ))"
  } | write_if_changed "$VAR/run/ports.env"

  sed -e "s#@DATA_DIR@#$VAR/kafka/data#g" -e "s#@PORT@#$PORT_kafka#g" \
      -e "s#@CONTROLLER_PORT@#$((PORT_kafka + 1))#g" deploy/kafka/server.properties |
    write_if_changed "$VAR/kafka/server.properties"

  # Workers run as root too when the master does: the temp dirs under var/ are root's.
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;"
  mkdir -p "$VAR/nginx/tmp"/{client_body,proxy,fastcgi,uwsgi,scgi}
  local nofile; nofile="$(ulimit -Hn)"; [ "$nofile" = unlimited ] && nofile=65536
  [ "$nofile" -gt 65536 ] && nofile=65536
  sed -e "s#@VAR@#$VAR#g" -e "s#@LB_PORT@#$LB_PORT#g" -e "s#@USER_LINE@#$user_line#g" \
      -e "s#@NOFILE@#$nofile#g" -e "s#@WORKER_CONNECTIONS@#$((nofile / 2))#g" \
      deploy/nginx/nginx.conf.template | write_if_changed "$VAR/nginx/nginx.conf"
}

# Fingerprint of what a running service was started with: restart it when it changes.
service_fingerprint() {
  case "$1" in
    redis)    echo "port=$PORT_redis" ;;
    ferretdb) echo "port=$PORT_ferretdb" ;;
    kafka)    sha256sum <"$VAR/kafka/server.properties" ;;
    nginx)    sha256sum <"$VAR/nginx/nginx.conf" ;;
  esac
}

# KRaft storage is formatted once; `make clean` removes it.
format_kafka() {
  [ -f "$VAR/kafka/data/meta.properties" ] && return 0
  log "formatting Kafka storage in var/kafka/data"
  local cp="$VAR/kafka/libs/*" id
  local l4j=(-Dlog4j.configuration="file:$ROOT/deploy/kafka/log4j.properties"
             -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties")
  if [ ! -s "$VAR/kafka/cluster-id" ]; then
    java "${l4j[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid >"$VAR/kafka/cluster-id"
  fi
  id="$(tr -d '[:space:]' <"$VAR/kafka/cluster-id")"
  # No --standalone: the quorum is given statically by controller.quorum.voters.
  java "${l4j[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$id" \
    -c "$VAR/kafka/server.properties" >"$VAR/log/kafka-format.log" 2>&1 ||
    { cat "$VAR/log/kafka-format.log" >&2; die "Kafka storage format failed"; }
}

# ------------------------------------------------------------------ supervisord

start_supervisord() {
  local conf_sha; conf_sha="$(sha256sum <"$SUPERVISOR_CONF")"
  if supervisord_running; then
    # A running supervisord keeps the config it started with: load an edited one.
    # `update` restarts only the programs whose definition changed.
    if [ "$(cat "$VAR/run/supervisord.conf.sha" 2>/dev/null)" != "$conf_sha" ]; then
      log "supervisord.conf changed: reloading it"
      sctl reread >/dev/null && sctl update
      printf '%s\n' "$conf_sha" >"$VAR/run/supervisord.conf.sha"
    fi
    return 0
  fi
  printf '%s\n' "$conf_sha" >"$VAR/run/supervisord.conf.sha"
  log "starting supervisord"
  rm -f "$VAR/run/supervisor.sock"
  # Many sockets per process under load (edges, nginx, redis): allow as many open files
  # as this machine lets us; every program inherits it.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  # A scrubbed environment: programs must see only var/stack.env (via bin/with-env),
  # never settings left over from whoever ran the first `make up`.
  env -i PATH="$PATH" HOME="${HOME:-/root}" LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    ${TZ:+TZ="$TZ"} "$VENV/bin/supervisord" -c "$SUPERVISOR_CONF"
  for _ in $(seq 1 50); do supervisord_running && return 0; sleep 0.2; done
  tail -n 20 "$VAR/log/supervisord.log" >&2 || true
  die "supervisord did not come up"
}

# Start programs that are not running, concurrently (supervisorctl waits `startsecs`
# per program when given one at a time).
start_programs() {
  local p pids=()
  for p in "$@"; do
    case "$(prog_state "$p")" in
      RUNNING|STARTING) ;;
      *) sctl start "$p" >/dev/null 2>&1 & pids+=($!) ;;
    esac
  done
  # Failures show up in the readiness checks, with the program's log.
  for p in "${pids[@]}"; do wait "$p" || true; done
}

# ------------------------------------------------------------------ main

write_stack_env
write_service_config
start_supervisord

# --- backing services
managed=()
for svc in redis kafka ferretdb; do
  plan="PLAN_$svc"; host="HOST_$svc"; port="PORT_$svc"
  if [ "${!plan}" = managed ]; then
    managed+=("$svc")
  else
    log "$svc: using the one already answering at ${!host}:${!port}"
    # Ours may be in BACKOFF/FATAL from an earlier run that lost the port: stop it.
    case "$(prog_state "services:$svc")" in
      STOPPED|NONE|EXITED) ;; *) sctl stop "services:$svc" >/dev/null 2>&1 || true ;;
    esac
  fi
done
managed+=(nginx)

[ "$PLAN_kafka" = managed ] && format_kafka

to_start=()
for svc in "${managed[@]}"; do
  fp="$(service_fingerprint "$svc")"
  fp_file="$VAR/run/$svc.started"
  if [ "$(prog_state "services:$svc")" = RUNNING ] && [ "$(cat "$fp_file" 2>/dev/null)" != "$fp" ]; then
    log "$svc: configuration changed, restarting"
    sctl stop "services:$svc" >/dev/null || true
  fi
  printf '%s\n' "$fp" >"$fp_file"
  to_start+=("services:$svc")
done
start_programs "${to_start[@]}"

REDIS="$(service_url redis)"; KAFKA="$(service_url kafka)"; MONGO="$(service_url ferretdb)"
prog_of() { [ "$1" = managed ] && echo "services:$2" || echo ""; }
wait_ready redis    "$(prog_of "$PLAN_redis" redis)"       30 probe redis "$REDIS"
wait_ready ferretdb "$(prog_of "$PLAN_ferretdb" ferretdb)" 60 probe mongo "$MONGO"
wait_ready kafka    "$(prog_of "$PLAN_kafka" kafka)"       120 probe kafka "$KAFKA"
wait_ready nginx    services:nginx                          15 probe http200 "http://127.0.0.1:$LB_PORT/lb-healthz"

# --- Kafka topics: before the apps start, so nothing auto-creates them with defaults.
if [ -f devtools/__main__.py ] || [ -f devtools/__main__/__init__.py ]; then
  log "ensuring Kafka topics"
  bin/with-env "$PY" -m devtools ensure-topics
else
  warn "devtools/__main__.py not there yet: Kafka topics not created"
fi

# --- app programs
app=("${APP_PROGRAMS[@]/#/app:}")
if [ -f "$VAR/run/stack.env.applied" ] && ! cmp -s "$VAR/stack.env" "$VAR/run/stack.env.applied"; then
  running=()
  for p in "${app[@]}"; do
    case "$(prog_state "$p")" in STOPPED|EXITED|NONE) ;; *) running+=("$p") ;; esac
  done
  if [ ${#running[@]} -gt 0 ]; then
    changed="$(diff "$VAR/run/stack.env.applied" "$VAR/stack.env" |
               sed -n 's/^[<>] \([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' | sort -u | tr '\n' ' ')" || true
    log "settings in var/stack.env changed (${changed% }): restarting the app programs"
    sctl stop "${running[@]}" >/dev/null || true
  fi
fi
cp "$VAR/stack.env" "$VAR/run/stack.env.applied"
start_programs "${app[@]}"

FLOWER_AUTH="$(bin/with-env bash -c 'printf %s "${FLOWER_BASIC_AUTH%%,*}"')"
wait_ready edge1   app:edge1  60 probe http200 "http://127.0.0.1:5001/readyz"
wait_ready edge2   app:edge2  60 probe http200 "http://127.0.0.1:5002/readyz"
wait_ready lb      ""         30 probe http200 "http://127.0.0.1:$LB_PORT/readyz"
wait_ready flower  app:flower 60 probe http200 "$FLOWER_URL/api/workers" "$FLOWER_AUTH"
wait_ready worker  app:worker 60 probe flower_worker "$FLOWER_URL/api/workers?refresh=1" "$FLOWER_AUTH"
# The others have no endpoint: RUNNING (alive past startsecs) is their check.
prog_running() { [ "$(prog_state "$1")" = RUNNING ]; }
for p in worker_outbox worker_push beat kafka_fanout; do
  wait_ready "$p" "app:$p" 30 prog_running "app:$p"
done

# ------------------------------------------------------------------ summary
cat <<EOF

Dev stack is up ($((SECONDS - T0)) s).
  Load balancer (sticky):  http://127.0.0.1:$LB_PORT   Socket.IO path /socket.io/
  Edge nodes:              http://127.0.0.1:5001  http://127.0.0.1:5002   (/healthz, /readyz)
  Flower:                  $FLOWER_URL
  Redis $REDIS ($PLAN_redis)
  Kafka $KAFKA ($PLAN_kafka)
  MongoDB $MONGO ($PLAN_ferretdb)
  Settings:                var/stack.env   (set variables when running 'make up' to change them)
  Logs:                    var/log/        (make logs; make status)
  Token for a user:        .venv/bin/python -m devtools token alice
  Stop:                    make down
EOF
