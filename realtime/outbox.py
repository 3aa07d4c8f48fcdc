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
from .redis_client import script


def encode(envelope: Envelope) -> dict[str, bytes | str]:
    # The relay reads these fields; _APPEND_MANY writes the same three.
    return {
        "topic": envelope.topic,
        "key": envelope.key or "",
        "event": orjson.dumps(envelope.to_dict()),
    }


# KEYS[1] the stream; ARGV: (topic, key, event) per entry, appended in order, all or
# none (one command for a batch: a pipelined XADD costs ~7 us of client CPU per entry).
_APPEND_MANY = """
for i = 1, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '*', 'topic', ARGV[i], 'key', ARGV[i + 1], 'event', ARGV[i + 2])
end
return #ARGV / 3
"""


def append(r: redis.Redis, *envelopes: Envelope, stream: str = keys.OUTBOX_STREAM) -> None:
    """Append envelopes in one command; `unavailable` if Redis cannot take them."""
    if not envelopes:
        return
    try:
        if len(envelopes) == 1:
            r.xadd(stream, encode(envelopes[0]))
            return
        args: list = []
        for env in envelopes:
            entry = encode(env)
            args += (entry["topic"], entry["key"], entry["event"])
        script(r, _APPEND_MANY)(keys=[stream], args=args)
    except redis.RedisError as exc:
        raise ApiError(UNAVAILABLE, "event buffer unavailable") from exc
