"""Typing expiry sweep (PROTOCOL §6): ends typing whose node died before its
timer fired. The edge's own timer usually wins; both re-check the deadline
atomically, so a stop is announced once."""
from __future__ import annotations

import logging

import redis

from realtime import keys, locks
from realtime.actions import typing
from workers import runtime

from .app import app

log = logging.getLogger(__name__)

# A sweep does at most typing.SWEEP_BATCH small Redis calls: far below this.
TYPING_SWEEP_LOCK_TTL_S = 10


@app.task(name="tasks.typing.expire_typing", acks_late=True, soft_time_limit=8, time_limit=9)
def expire_typing() -> int:
    """Idempotent (each stop is claimed atomically), hence acks_late. No retries:
    the next beat tick is the retry."""
    ctx = runtime.context()
    try:
        with locks.held(ctx.redis, keys.TYPING_SWEEP_LOCK, TYPING_SWEEP_LOCK_TTL_S) as mine:
            if not mine:
                return 0
            return typing.sweep(ctx)
    except redis.RedisError as exc:
        log.warning("typing sweep: redis unavailable (%s)", exc)
        return 0
