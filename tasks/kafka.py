"""Outbox -> Kafka relay (PROTOCOL §9)."""
from __future__ import annotations

import logging

import redis

from realtime import keys, locks
from realtime.redis_client import get_redis
from realtime.settings import get_settings
from workers import kafka_relay

from .app import app

log = logging.getLogger(__name__)

# Lock TTL > the run budget + Kafka's delivery timeout, so a live run keeps it;
# a killed run frees it after this long at worst.
RELAY_LOCK_TTL_S = 30


@app.task(name="tasks.kafka.relay_outbox", acks_late=True, soft_time_limit=25, time_limit=30)
def relay_outbox() -> int:
    """Idempotent (resends carry the same event_id), hence acks_late."""
    r = get_redis()
    settings = get_settings()
    with locks.held(r, keys.OUTBOX_RELAY_LOCK, RELAY_LOCK_TTL_S) as mine:
        if not mine:
            return 0  # another run is draining
        try:
            return kafka_relay.relay(r, settings)
        except kafka_relay.KafkaUnavailable as exc:
            kafka_relay.reset_producer()
            log.warning("outbox relay: %s (backlog %s)", exc, _backlog(r))
            return 0
        except BaseException:
            # Anything else (the soft time limit striking inside a flush, a Redis
            # error between batches) can leave the producer holding unresolved
            # batches: the next run starts with a new one. The entries stay pending.
            kafka_relay.reset_producer()
            raise


def _backlog(r) -> int | str:
    try:
        return kafka_relay.backlog(r)
    except redis.RedisError:
        return "unknown"
