"""Notification and push tasks (PROTOCOL §8). Thin: ids in, actions and delivery out."""
from __future__ import annotations

import logging
import random

from realtime import taskqueue
from realtime.actions import notifications
from realtime.db import DB_DOWN_ERRORS
from workers import runtime
from workers.push import delivery

from .app import app

log = logging.getLogger(__name__)

# Delivery retries: full-jitter exponential backoff from RETRY_BASE_S up to
# RETRY_CAP_S, never sooner than the provider's Retry-After.
RETRY_BASE_S = 0.5
RETRY_CAP_S = 300.0
MAX_DELIVERY_RETRIES = 10


def backoff(retries: int, retry_after: float | None, rng=random.random) -> float:
    jittered = rng() * min(RETRY_CAP_S, RETRY_BASE_S * (2 ** retries))
    return max(jittered, retry_after or 0.0)


# Idempotent through the per-conversation cursor and derived notification ids.
@app.task(name=taskqueue.PUSH_CONVERSATION_ACTIVITY, acks_late=True,
          autoretry_for=(TimeoutError, *DB_DOWN_ERRORS), retry_backoff=0.5, retry_backoff_max=30,
          retry_jitter=True, max_retries=8, soft_time_limit=20, time_limit=30)
def conversation_activity(conversation_id: str, sent_at: float | None = None) -> int:
    return notifications.conversation_activity(runtime.context(), conversation_id, sent_at)


# Not acks_late: a rerun after a crash mid-way could push the window's count twice.
@app.task(name=taskqueue.PUSH_FLUSH, autoretry_for=DB_DOWN_ERRORS, retry_backoff=0.5,
          retry_jitter=True, max_retries=5, soft_time_limit=20, time_limit=30)
def flush(user_id: str, conversation_id: str) -> int:
    return notifications.flush(runtime.context(), user_id, conversation_id)


# Idempotent by (push, device) key, hence acks_late: a worker killed mid-delivery
# gets the task redelivered and the key says whether it already went out.
@app.task(name=taskqueue.PUSH_DELIVER, bind=True, acks_late=True, max_retries=MAX_DELIVERY_RETRIES,
          autoretry_for=DB_DOWN_ERRORS, retry_backoff=0.5, retry_jitter=True,
          soft_time_limit=45, time_limit=55)
def deliver(self, push_id: str, device_key: str) -> str:
    try:
        return delivery.deliver(runtime.context(), push_id, device_key)
    except delivery.RetryLater as exc:
        countdown = backoff(self.request.retries, exc.retry_after)
        log.info("push %s to %s: %s; retry %d in %.2fs", push_id, device_key, exc,
                 self.request.retries + 1, countdown)
        raise self.retry(exc=exc, countdown=countdown)


@app.task(name=taskqueue.PUSH_CALL_MISSED, acks_late=True, autoretry_for=DB_DOWN_ERRORS,
          retry_backoff=0.5, retry_jitter=True, max_retries=5, soft_time_limit=20, time_limit=30)
def call_missed(call_id: str, conversation_id: str, caller_id: str, user_ids: list[str]) -> dict:
    """For the calls feature: notify `user_ids` that they missed `call_id`."""
    return notifications.call_missed(runtime.context(), call_id, conversation_id, caller_id, user_ids)


@app.task(name=taskqueue.PUSH_CLEAR, autoretry_for=(TimeoutError, *DB_DOWN_ERRORS), retry_backoff=0.5,
          retry_jitter=True, max_retries=5, soft_time_limit=20, time_limit=30)
def clear(user_id: str, conversation_id: str, reading_device_id: str | None) -> int:
    """For read receipts: the user read the conversation on `reading_device_id`."""
    return notifications.clear(runtime.context(), user_id, conversation_id, reading_device_id)
