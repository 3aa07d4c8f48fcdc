#!/usr/bin/env bash
# Flower (Celery monitor) on 127.0.0.1:5555; run by supervisord through bin/with-env.
# With FLOWER_BASIC_AUTH (user:password[,user2:password2]) set, UI and API need basic
# auth. Without it (the dev stack) the API is open on loopback: Flower 2 disables its
# API for unauthenticated use unless FLOWER_UNAUTHENTICATED_API is set.
set -euo pipefail
args=(--address=127.0.0.1 --port=5555)
if [ -n "${FLOWER_BASIC_AUTH:-}" ]; then
  args+=("--basic_auth=$FLOWER_BASIC_AUTH")
else
  export FLOWER_UNAUTHENTICATED_API=true
fi
exec .venv/bin/celery -A tasks.app flower "${args[@]}"
