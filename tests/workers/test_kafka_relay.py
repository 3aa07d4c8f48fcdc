"""Every acknowledged state change reaches Kafka at least once (PROTOCOL §9)."""
import os
import signal
import subprocess
import time

import orjson
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import murmur2

from realtime import envelope, keys, outbox
from tests import support
from tests.support import unique
from workers import kafka_relay



def consume_event_ids(topic: str, want: set[str], timeout: float) -> dict[str, dict]:
    """Read the topic, from the running test's start, until every wanted event_id was seen (or time out)."""
    deadline = time.monotonic() + timeout
    while True:
        # A just-restarted broker can take longer to listen than kafka-python waits to
        # bootstrap (20-30 s on a loaded 2-core machine): keep trying until the deadline.
        try:
            consumer = KafkaConsumer(bootstrap_servers=support.SETTINGS.kafka_bootstrap,
                                     enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000,
                                     request_timeout_ms=30000)
            break
        except KafkaTimeoutError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(parts)
    support.seek_to_test_start(consumer, parts)
    seen: dict[str, dict] = {}
    try:
        while time.monotonic() < deadline and not want <= set(seen):
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    event = orjson.loads(record.value)
                    if event.get("event_id") in want:
                        seen.setdefault(event["event_id"], dict(event, _key=record.key, _partition=record.partition))
    finally:
        consumer.close()
    return seen


def test_message_events_reach_kafka_with_the_envelope(clients):
    alice = unique("alice")
    conv = support.make_conversation([alice])
    a = clients(support.EDGE1, user=alice)
    msg = a.call("message_send", {"conversation_id": conv, "client_msg_id": "k1", "body": "to kafka"})["message"]
    a.call("message_edit", {"message_id": msg["id"], "body": "edited"})
    a.call("message_delete", {"message_id": msg["id"]})
    topic = support.SETTINGS.topic("messages")
    created = envelope.stable_event_id("message.created", msg["id"])
    deleted = envelope.stable_event_id("message.deleted", msg["id"])
    seen = consume_event_ids(topic, {created, deleted}, timeout=15)
    assert set(seen) == {created, deleted}
    ev = seen[created]
    assert ev["type"] == "message.created" and ev["conversation_id"] == conv and ev["user_id"] == alice
    assert ev["data"]["message"] == msg
    assert ev["source"].startswith("realtime/edge/") and ev["occurred_at"].endswith("Z")
    assert ev["_key"] == conv.encode()
    assert seen[deleted]["data"]["message"]["deleted"] is True


def test_a_batch_is_appended_in_order_with_the_fields_of_a_single_append():
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    stream = unique("rt:outbox:test")
    events = [envelope.make("presence.changed", "realtime/test", {"i": i}, user_id=unique("u")) for i in range(3)]
    try:
        outbox.append(r, events[0], stream=stream)
        outbox.append(r, *events[1:], stream=stream)
        entries = [fields for _, fields in r.xrange(stream)]
        assert entries == [{k: v.decode() if isinstance(v, bytes) else v for k, v in outbox.encode(e).items()}
                           for e in events]
    finally:
        r.delete(stream)


@pytest.fixture
def fifty_events():
    """(redis, stream, events): fifty presence events appended to an outbox stream of the test's own."""
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    stream = unique("rt:outbox:test")
    events = [envelope.make("presence.changed", "realtime/test", {"i": i}, user_id=unique("u"))
              for i in range(50)]
    outbox.append(r, *events, stream=stream)
    yield r, stream, events
    r.delete(stream)


def test_relay_killed_mid_batch_loses_nothing(fifty_events):
    """A run that dies after Kafka got the batch but before it acknowledged the
    stream leaves the entries pending; the next run sends them (same event_ids)."""
    settings = support.SETTINGS
    r, stream, events = fifty_events

    class Killed(Exception):
        pass

    def die():
        raise Killed()

    with pytest.raises(Killed):
        kafka_relay.relay(r, settings, stream=stream, fail_after_send=die)
    assert r.xlen(stream) == 50  # nothing acknowledged
    assert kafka_relay.relay(r, settings, stream=stream) == 50
    assert r.xlen(stream) == 0
    seen = consume_event_ids(settings.topic("presence"), {e.event_id for e in events}, timeout=15)
    assert len(seen) == 50


def test_a_keys_partition_is_the_java_clients(fifty_events):
    """Events with the same key land in the partition the Java client and kafka-python
    pick for it (murmur2), so the message service's events and the relay's for one
    conversation share a partition and stay in order."""
    settings = support.SETTINGS
    r, stream, events = fifty_events
    assert kafka_relay.relay(r, settings, stream=stream) == 50
    topic = settings.topic("presence")
    seen = consume_event_ids(topic, {e.event_id for e in events}, timeout=15)
    assert len(seen) == 50
    partitions = sorted({event["_partition"] for event in seen.values()})
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        count = len(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()
    assert count > 1, "the check needs a topic of several partitions"
    for event in seen.values():
        assert event["_partition"] == (murmur2(event["_key"]) & 0x7FFFFFFF) % count, event["_key"]
    assert len(partitions) > 1   # fifty keys spread: the hash was applied, not one fixed partition


def test_a_flush_that_times_out_keeps_the_batch_and_reports_kafka_unavailable(fifty_events):
    """A flush that does not finish in time (a broker that does not answer, or one that
    came back while a producer's requests were in flight) is Kafka being unavailable:
    the entries stay pending, and the task rebuilds the producer. The real broker is
    paused (SIGSTOP) while the batch is sent, so that nothing can answer in time."""
    if not _kafka_managed():
        pytest.skip("Kafka is not run by this stack's supervisord (external KAFKA_BOOTSTRAP)")
    settings = support.SETTINGS
    r, stream, events = fifty_events
    producer = kafka_relay.make_producer(settings)
    # Metadata and a connection first: with them, send() only queues, and the flush waits.
    assert producer.connect(settings.topic("presence"))
    kafka_pid = support.supervisor_pid("services:kafka")
    assert kafka_pid > 0   # never signal pid 0, the test's own process group
    os.kill(kafka_pid, signal.SIGSTOP)
    try:
        with pytest.raises(kafka_relay.KafkaUnavailable, match="50 of 50 events not acknowledged by Kafka"):
            kafka_relay.relay(r, settings, stream=stream, producer=producer, flush_timeout_s=0.5)
    finally:
        os.kill(kafka_pid, signal.SIGCONT)
    producer.close()   # as the task drops it (it may still deliver: at least once)
    assert r.xlen(stream) == 50
    assert r.xpending(stream, keys.OUTBOX_GROUP)["pending"] == 50
    fresh = kafka_relay.make_producer(settings)
    try:
        assert kafka_relay.relay(r, settings, stream=stream, producer=fresh) == 50
    finally:
        fresh.close(10)
    assert r.xlen(stream) == 0
    seen = consume_event_ids(settings.topic("presence"), {e.event_id for e in events}, timeout=15)
    assert len(seen) == 50


def _kafka_managed() -> bool:
    out = subprocess.run([*support.SUPERVISORCTL, "status", "services:kafka"], capture_output=True, text=True)
    return "RUNNING" in out.stdout


def test_kafka_stopped_then_restarted_loses_no_acknowledged_event(clients):
    if not _kafka_managed():
        pytest.skip("Kafka is not run by this stack's supervisord (external KAFKA_BOOTSTRAP)")
    alice = unique("alice")
    conv = support.make_conversation([alice])
    a = clients(support.EDGE1, user=alice)
    subprocess.run([*support.SUPERVISORCTL, "stop", "services:kafka"], check=True, capture_output=True)
    try:
        acked = []
        for i in range(20):
            ack = a.call("message_send", {"conversation_id": conv, "client_msg_id": f"k{i}", "body": f"b{i}"})
            assert ack["ok"], ack  # the edge never waits on Kafka
            acked.append(ack["message"]["id"])
    finally:
        subprocess.run([*support.SUPERVISORCTL, "start", "services:kafka"], check=True, capture_output=True)
    want = {envelope.stable_event_id("message.created", mid) for mid in acked}
    seen = consume_event_ids(support.SETTINGS.topic("messages"), want, timeout=90)
    assert set(seen) == want
