"""Drain the outbox stream (realtime.outbox) into Kafka, at least once, in batches.

Entries are read through a consumer group, so an entry handed out but not yet
acknowledged stays in the group's pending list: a run that fails or is killed
mid-batch leaves its entries there, and the next run sends them first. An entry
is acknowledged and deleted only after Kafka acknowledged it (acks=all). A
resend after a crash carries the same event_id, as PROTOCOL §9 allows.
"""
from __future__ import annotations

import functools
import logging
import time

import confluent_kafka
import redis

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
# Longer than the delivery timeout, so a flush normally returns with every
# delivery reported; when it does not, the batch counts as failed (_send_batch).
FLUSH_TIMEOUT_S = 20.0
# How long a producer dropped after a failure may take to let go (RelayProducer.close).
DROP_TIMEOUT_S = 1.0


class KafkaUnavailable(RuntimeError):
    pass


class RelayProducer:
    """librdkafka's producer (confluent-kafka) with what the relay needs of it.

    Not kafka-python's, which the tests and the fan-out worker read with: its producer
    costs ~56 µs of Python per record, so a relay worker could never move more than
    ~17k events/s on this machine (bench W5); librdkafka batches and frames in C
    threads, and the relay's own Redis work becomes its limit.

    Delivery reports are served by `flush` (and `poll`) in the calling thread.
    """

    def __init__(self, settings: Settings):
        self._producer = confluent_kafka.Producer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "client.id": "realtime-relay",
            "acks": "all",
            "linger.ms": 5,
            # A key's partition as the Java client (and kafka-python) choose it: the
            # message service and any other producer put a conversation's events in the
            # same partition as this relay, so consumers see them in order
            # (librdkafka's default hashes keys differently).
            "partitioner": "murmur2_random",
            "request.timeout.ms": KAFKA_REQUEST_TIMEOUT_MS,
            "message.timeout.ms": KAFKA_DELIVERY_TIMEOUT_MS,
            "socket.connection.setup.timeout.ms": KAFKA_REQUEST_TIMEOUT_MS,
        }, logger=logging.getLogger("workers.kafka_relay.librdkafka"))

    def connect(self, topic: str, timeout_s: float = 10.0) -> bool:
        """Fetch `topic`'s metadata (and so a broker connection); whether it has partitions."""
        try:
            metadata = self._producer.list_topics(topic, timeout=timeout_s)
        except confluent_kafka.KafkaException:
            return False
        found = metadata.topics.get(topic)
        return bool(found is not None and found.error is None and found.partitions)

    def send(self, topic: str, value: str | bytes, key: str | None, on_delivered) -> None:
        """Queue one record; `on_delivered()` runs once Kafka acknowledged it. Raises
        BufferError when the local queue is full, KafkaException on a bad record."""
        def report(err, _msg):
            if err is None:
                on_delivered()
        self._producer.produce(topic, value=value, key=key, on_delivery=report)

    def flush(self, timeout_s: float) -> int:
        """Wait for the queued records' reports; how many are still unreported."""
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = DROP_TIMEOUT_S) -> None:
        """Deliver what is queued within `timeout_s`, then drop the rest. Records already
        sent may still reach Kafka after this: at least once."""
        if self._producer.flush(timeout_s):
            self._producer.purge()
            self._producer.poll(0)
        self._producer.close()


def make_producer(settings: Settings) -> RelayProducer:
    return RelayProducer(settings)


_producer: RelayProducer | None = None


def producer_for(settings: Settings) -> RelayProducer:
    """One producer per process, reused across runs (keep-alive connections)."""
    global _producer
    if _producer is None:
        try:
            _producer = make_producer(settings)
        except confluent_kafka.KafkaException as exc:
            raise KafkaUnavailable(f"cannot set up a Kafka producer for {settings.kafka_bootstrap}: {exc}") from exc
    return _producer


def reset_producer() -> None:
    """Drop the process's producer after a failure, so the next run starts clean."""
    global _producer
    if _producer is not None:
        try:
            _producer.close()
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


def _send_batch(producer: RelayProducer, settings: Settings, entries,
                flush_timeout_s: float) -> tuple[list[str], int]:
    """Send a batch; return (ids Kafka acknowledged or that are unusable, failures).

    A Kafka error while sending or flushing is not raised from here: the entries
    not acknowledged by then count as failures, so the caller keeps them for the
    next run and reports Kafka unavailable (which also rebuilds the producer).
    """
    done: list[str] = []
    acknowledged: list[str] = []   # appended by delivery reports, which flush() serves
    handed = 0
    try:
        for entry_id, fields in entries:
            if not fields or "event" not in fields:
                done.append(entry_id)  # deleted or malformed entry: nothing to send
                continue
            producer.send(settings.topic(fields["topic"]), fields["event"], fields.get("key") or None,
                          functools.partial(acknowledged.append, entry_id))
            handed += 1
    except (BufferError, confluent_kafka.KafkaException) as exc:
        log.warning("outbox relay: send failed after %d of %d events: %r", handed, len(entries), exc)
    unreported = producer.flush(flush_timeout_s)
    if unreported:
        log.warning("outbox relay: %d events unreported after a %.1f s flush", unreported, flush_timeout_s)
    # Everything not acknowledged now (not handed over, refused, unreported) stays pending.
    # A report that comes later is served by a later flush and only appends to this
    # batch's list, which nothing reads any more: the entry is sent again (at least once).
    failed = len(entries) - len(done) - len(acknowledged)
    return done + acknowledged, failed


def relay(r: redis.Redis, settings: Settings, *, producer: RelayProducer | None = None,
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
