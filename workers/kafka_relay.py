"""Drain the outbox stream (realtime.outbox) into Kafka, at least once, in batches.

Entries are read through a consumer group, so an entry handed out but not yet
acknowledged stays in the group's pending list: a run that fails or is killed
mid-batch leaves its entries there, and the next run sends them first. An entry
is acknowledged and deleted only after Kafka acknowledged it (acks=all). A
resend after a crash carries the same event_id, as PROTOCOL §9 allows.
"""
from __future__ import annotations

import logging
import time

import redis
from kafka import KafkaProducer
from kafka.errors import KafkaError

from realtime import keys
from realtime.settings import Settings

log = logging.getLogger(__name__)

# One relay runs at a time (a Redis lock), so one consumer name serves: its
# pending list is exactly "handed out, not yet in Kafka".
RELAY_CONSUMER = "relay"
BATCH_SIZE = 1000
# A run stops taking new batches after this long, leaving the rest to the next
# beat tick, so one run never holds its worker slot for long.
RUN_BUDGET_S = 5.0
# Kafka timeouts (ms): a broker that is down fails the batch within these and the
# entries wait in Redis for the next run.
KAFKA_REQUEST_TIMEOUT_MS = 5000
KAFKA_DELIVERY_TIMEOUT_MS = 15000
KAFKA_MAX_BLOCK_MS = 5000
# Longer than the delivery timeout, so a flush normally returns with every
# future resolved; when it does not, the batch counts as failed (_send_batch).
FLUSH_TIMEOUT_S = 20.0


class KafkaUnavailable(RuntimeError):
    pass


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id="realtime-relay",
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
        delivery_timeout_ms=KAFKA_DELIVERY_TIMEOUT_MS,
        max_block_ms=KAFKA_MAX_BLOCK_MS,
    )


_producer: KafkaProducer | None = None


def producer_for(settings: Settings) -> KafkaProducer:
    """One producer per process, reused across runs (keep-alive connections)."""
    global _producer
    if _producer is None:
        try:
            _producer = make_producer(settings)
        except KafkaError as exc:
            raise KafkaUnavailable(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    return _producer


def reset_producer() -> None:
    """Drop the process's producer after a failure, so the next run starts clean."""
    global _producer
    if _producer is not None:
        try:
            _producer.close(timeout=1)
        except Exception:
            pass
    _producer = None


def ensure_group(r: redis.Redis, stream: str) -> None:
    try:
        r.xgroup_create(stream, keys.OUTBOX_GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _read(r: redis.Redis, stream: str, pending: bool, count: int) -> list[tuple[str, dict | None]]:
    reply = r.xreadgroup(keys.OUTBOX_GROUP, RELAY_CONSUMER, {stream: "0" if pending else ">"},
                         count=count)
    if not reply:
        return []
    return reply[0][1]


def _send_batch(producer: KafkaProducer, settings: Settings, entries,
                flush_timeout_s: float) -> tuple[list[str], int]:
    """Send a batch; return (ids Kafka acknowledged or that are unusable, failures).

    A Kafka error while sending or flushing is not raised from here: the entries
    not acknowledged by then count as failures, so the caller keeps them for the
    next run and reports Kafka unavailable (which also rebuilds the producer).
    A flush that times out (KafkaTimeoutError) is the case that matters: after a
    broker restart a producer's in-flight batches can stay unresolved, and only a
    new producer gets going again.
    """
    futures = []
    done: list[str] = []
    try:
        for entry_id, fields in entries:
            if not fields or "event" not in fields:
                done.append(entry_id)  # deleted or malformed entry: nothing to send
                continue
            key = fields.get("key") or None
            futures.append((entry_id, producer.send(
                settings.topic(fields["topic"]),
                value=fields["event"].encode() if isinstance(fields["event"], str) else fields["event"],
                key=key.encode() if key else None,
            )))
    except KafkaError as exc:
        log.warning("outbox relay: send failed after %d of %d events: %r", len(futures), len(entries), exc)
    try:
        producer.flush(timeout=flush_timeout_s)
    except KafkaError as exc:
        log.warning("outbox relay: flush failed: %r", exc)
    failed = len(entries) - len(done) - len(futures)  # not handed to the producer
    for entry_id, future in futures:
        if future.succeeded():
            done.append(entry_id)
        else:
            failed += 1
    return done, failed


def relay(r: redis.Redis, settings: Settings, *, producer: KafkaProducer | None = None,
          stream: str = keys.OUTBOX_STREAM, batch_size: int = BATCH_SIZE, budget_s: float = RUN_BUDGET_S,
          flush_timeout_s: float = FLUSH_TIMEOUT_S, fail_after_send=None) -> int:
    """Move outbox entries to Kafka until the stream is drained or the budget is spent.

    Returns how many entries reached Kafka. `fail_after_send` is a test hook: a
    callable run after Kafka acknowledged a batch and before the stream is
    acknowledged, to simulate a worker killed mid-batch.
    """
    ensure_group(r, stream)
    producer = producer or producer_for(settings)
    started = time.monotonic()
    moved = 0
    pending = True  # first the entries an earlier run took but did not finish
    while time.monotonic() - started < budget_s:
        entries = _read(r, stream, pending, batch_size)
        if not entries:
            if pending:
                pending = False
                continue
            break
        done, failed = _send_batch(producer, settings, entries, flush_timeout_s)
        if fail_after_send is not None:
            fail_after_send()
        if done:
            pipe = r.pipeline(transaction=False)
            pipe.xack(stream, keys.OUTBOX_GROUP, *done)
            pipe.xdel(stream, *done)
            pipe.execute()
            moved += len(done)
        if failed:
            raise KafkaUnavailable(f"{failed} of {len(entries)} events not acknowledged by Kafka; kept for retry")
    return moved


def backlog(r: redis.Redis) -> int:
    """Entries waiting in the outbox (pending or not yet read)."""
    return r.xlen(keys.OUTBOX_STREAM)
