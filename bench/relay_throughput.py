"""Events/s one relay worker moves from the Redis outbox to Kafka (W5 of issue 7),
against the bare send rate of its producer (librdkafka through confluent-kafka) on this
machine as the ceiling, and kafka-python's, the producer the relay used before.

    .venv/bin/python -m bench.relay_throughput --events 50000
"""
from __future__ import annotations

import argparse
import json
import time

import confluent_kafka
import orjson
import redis
from kafka import KafkaProducer

from realtime import envelope, outbox
from tests import support
from workers import kafka_relay


def bare_kafka_python_rate(settings, events) -> float:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                             batch_size=256 * 1024)
    payloads = [(e.key.encode(), orjson.dumps(e.to_dict())) for e in events]
    topic = settings.topic("presence")
    start = time.perf_counter()
    for key, value in payloads:
        producer.send(topic, value=value, key=key)
    producer.flush(60)
    elapsed = time.perf_counter() - start
    producer.close()
    return len(payloads) / elapsed


def bare_librdkafka_rate(settings, events) -> float:
    """librdkafka with the relay's acks and linger, records produced as fast as its queue
    takes them."""
    producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all",
                                         "linger.ms": 5})
    payloads = [(e.key.encode(), orjson.dumps(e.to_dict())) for e in events]
    topic = settings.topic("presence")
    acknowledged = 0

    def report(err, _msg):
        nonlocal acknowledged
        acknowledged += err is None

    start = time.perf_counter()
    for key, value in payloads:
        producer.produce(topic, value=value, key=key, on_delivery=report)
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - start
    assert acknowledged == len(payloads), f"{acknowledged} of {len(payloads)} acknowledged"
    return len(payloads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50000)
    args = parser.parse_args()
    settings = support.SETTINGS
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    stream = support.unique("rt:outbox:bench")
    events = [envelope.make("presence.changed", "realtime/bench", {"status": "online", "i": i},
                            user_id=f"user-{i % 1000}") for i in range(args.events)]
    for i in range(0, len(events), 1000):
        outbox.append(r, *events[i:i + 1000], stream=stream)
    producer = kafka_relay.make_producer(settings)
    start = time.perf_counter()
    moved = 0
    while True:
        n = kafka_relay.relay(r, settings, producer=producer, stream=stream, budget_s=3600)
        moved += n
        if n == 0:
            break
    relay_elapsed = time.perf_counter() - start
    r.delete(stream)
    ceiling = bare_librdkafka_rate(settings, events)
    kafka_python = bare_kafka_python_rate(settings, events)
    rate = moved / relay_elapsed
    print(json.dumps({
        "events": args.events,
        "relay_events_per_s": round(rate),
        "bare_librdkafka_send_per_s": round(ceiling),
        "ratio": round(rate / ceiling, 2),
        "bare_kafka_python_send_per_s": round(kafka_python),
        "ratio_to_kafka_python": round(rate / kafka_python, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
