"""`conversations.last_seq`, advanced by a beat sweep (PROTOCOL §4): sends only note
the conversation as due; readers meanwhile take the Redis seq hint."""
from __future__ import annotations

import logging

import redis

from realtime import keys, locks
from realtime.actions import conversations
from realtime.errors import ApiError
from workers import runtime

from .app import app

log = logging.getLogger(__name__)

# Above the hard time limit, so a live run keeps the lock and a killed one frees it soon.
LAST_SEQ_SWEEP_LOCK_TTL_S = 15


@app.task(name="tasks.conversations.advance_last_seqs", acks_late=True, soft_time_limit=10, time_limit=12)
def advance_last_seqs() -> int:
    """Idempotent ($max to the current hints), hence acks_late. No Celery retries: the
    next beat tick is the retry, and a failed run leaves its conversations due."""
    ctx = runtime.context()
    try:
        with locks.held(ctx.redis, keys.LAST_SEQ_SWEEP_LOCK, LAST_SEQ_SWEEP_LOCK_TTL_S) as mine:
            if not mine:
                return 0
            return conversations.advance_due_last_seqs(ctx.redis)
    except (redis.RedisError, ApiError) as exc:
        log.warning("last_seq sweep postponed: %s", exc)
        return 0
