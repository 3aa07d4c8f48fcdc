"""Fan out what the message service produces to `chat.messages` (PROTOCOL §4).

`python -m workers.kafka_fanout`: a long-running consumer (one per stack; more
instances in the same group share partitions). Offsets are committed after a
batch was handled, so a crash replays it; each event_id is claimed in Redis
before its emit, so a replay fans nothing out twice. The layer's own events
(source `realtime/...`) were fanned out by the edge that made them and are skipped.
"""
from __future__ import annotations

import logging
import signal
import sys
import time

import orjson
import redis
from kafka import KafkaConsumer
from kafka.errors import KafkaError

from realtime.actions import messages
from realtime.envelope import TOPIC_MESSAGES

from . import runtime

log = logging.getLogger("workers.kafka_fanout")

GROUP_ID = "realtime-fanout"
POLL_TIMEOUT_MS = 500
# Back-off after a failure of Kafka or Redis before trying again.
RETRY_DELAY_S = 1.0


def make_consumer(settings) -> KafkaConsumer:
    return KafkaConsumer(
        settings.topic(TOPIC_MESSAGES),
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        group_id=GROUP_ID,
        client_id=f"realtime-fanout-{runtime.worker_name()}",
        enable_auto_commit=False,
        # A new group starts at the beginning, so nothing produced between the
        # topic's creation and the consumer's first start is missed.
        auto_offset_reset="earliest",
        request_timeout_ms=30000,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
        max_poll_records=500,
    )


def handle_record(ctx, value: bytes) -> bool:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        log.warning("skipping a chat.messages record that is not JSON")
        return False
    if not isinstance(event, dict):
        return False
    return messages.fan_out_external(ctx, event)


def run(stop: list[bool]) -> None:
    ctx = runtime.context()
    consumer = None
    while not stop[0]:
        try:
            if consumer is None:
                consumer = make_consumer(ctx.settings)
                log.info("consuming %s as group %s", ctx.settings.topic(TOPIC_MESSAGES), GROUP_ID)
            batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
            for records in batches.values():
                for record in records:
                    handle_record(ctx, record.value)
            if batches:
                consumer.commit()
        except (KafkaError, redis.RedisError) as exc:
            # Not committed: the batch is polled again after the back-off.
            log.warning("fan-out paused: %s", exc)
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:
                    pass
                consumer = None
            time.sleep(RETRY_DELAY_S)
    if consumer is not None:
        consumer.close(autocommit=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    # kafka-python logs every connection and fetch-session event at INFO.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = [False]

    def _stop(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run(stop)


if __name__ == "__main__":
    main()
