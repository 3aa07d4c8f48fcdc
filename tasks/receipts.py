"""Read receipt aggregation (PROTOCOL §7), driven by celery beat."""
from __future__ import annotations

import logging

import redis

from realtime import keys, locks
from realtime.errors import ApiError
from workers import receipts, runtime

from .app import app

log = logging.getLogger(__name__)

# Lock TTL above the task's hard time limit, so a live run keeps the lock and a
# killed one frees it soon.
READS_FLUSH_LOCK_TTL_S = 15


@app.task(name="tasks.receipts.flush_reads", acks_late=True, soft_time_limit=10, time_limit=12)
def flush_reads() -> int:
    """Idempotent (a redone run writes the same $max values and the same event ids),
    hence acks_late. No Celery retries: the next beat tick, a fraction of a second
    later, is the retry, and a failed run keeps its reads in Redis for it."""
    ctx = runtime.context()
    try:
        with locks.held(ctx.redis, keys.READS_FLUSH_LOCK, READS_FLUSH_LOCK_TTL_S) as mine:
            if not mine:
                return 0
            return receipts.flush(ctx)
    except (redis.RedisError, ApiError) as exc:
        log.warning("receipt aggregation postponed: %s", exc)
        return 0
