"""Presence sweep task (PROTOCOL §5: a killed node's users go offline by the sweep)."""
from __future__ import annotations

import redis

from workers import presence_sweep, runtime

from .app import app

# The lock outlives the hard time limit, so a live run always holds it.
SWEEP_LOCK_TTL_S = 30


# Idempotent (it settles whatever is due from stored state), hence acks_late.
@app.task(name="tasks.presence.sweep", acks_late=True, soft_time_limit=20, time_limit=25,
          autoretry_for=(redis.RedisError,), retry_backoff=1, retry_backoff_max=5, retry_jitter=True,
          max_retries=2)
def sweep() -> dict | None:
    return presence_sweep.sweep(runtime.context(), SWEEP_LOCK_TTL_S)
