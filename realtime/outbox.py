"""The durable buffer between a state change and Kafka (PROTOCOL §9).

The process that makes a state change appends its envelope to a Redis stream
right after the write commits; Celery workers drain the stream into Kafka
(`workers/kafka_relay.py`). The edge never waits on Kafka, Kafka being down only
grows the stream, and an entry leaves the stream only after Kafka acknowledged it.
"""
from __future__ import annotations

import orjson
import redis

from . import keys
from .envelope import Envelope
from .errors import UNAVAILABLE, ApiError


def encode(envelope: Envelope) -> dict[str, bytes | str]:
    return {
        "topic": envelope.topic,
        "key": envelope.key or "",
        "event": orjson.dumps(envelope.to_dict()),
    }


def append(r: redis.Redis, *envelopes: Envelope, stream: str = keys.OUTBOX_STREAM) -> None:
    """Append envelopes in one round trip; `unavailable` if Redis cannot take them."""
    if not envelopes:
        return
    try:
        if len(envelopes) == 1:
            r.xadd(stream, encode(envelopes[0]))
            return
        pipe = r.pipeline(transaction=False)
        for env in envelopes:
            pipe.xadd(stream, encode(env))
        pipe.execute()
    except redis.RedisError as exc:
        raise ApiError(UNAVAILABLE, "event buffer unavailable") from exc
