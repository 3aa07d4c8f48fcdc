"""Messages the message service produces to chat.messages are fanned out once."""
import time
import uuid

import orjson
from kafka import KafkaProducer

from realtime import envelope, timeutil
from tests import support
from tests.support import unique


def produce(*events):
    producer = KafkaProducer(bootstrap_servers=support.SETTINGS.kafka_bootstrap, acks="all")
    for event in events:
        producer.send(support.SETTINGS.topic("messages"), value=orjson.dumps(event),
                      key=event["conversation_id"].encode())
    producer.flush(10)
    producer.close()


def external_event(conv, seq, event_type="message.created", source="message-service", event_id=None):
    message = {"id": unique("ext"), "conversation_id": conv, "seq": seq, "sender_id": "svc-bot",
               "body": f"from the service {seq}", "reply_to": None,
               "created_at": timeutil.iso(time.time()), "edited_at": None, "client_msg_id": None}
    return {"event_id": event_id or str(uuid.uuid4()), "type": event_type,
            "occurred_at": timeutil.iso(time.time()), "source": source, "conversation_id": conv,
            "user_id": "svc-bot", "data": {"message": message}}


def test_external_messages_fan_out_once_and_own_events_not_twice(clients):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    a = clients(support.EDGE1, user=alice)
    b = clients(support.EDGE2, user=bob)
    a.call("join_room", {"conversation_id": conv})
    b.call("join_room", {"conversation_id": conv})

    ext = external_event(conv, 1)
    own = external_event(conv, 2, source=envelope.source_id("edge", "edge1"))
    deleted = external_event(conv, 1, event_type="message.deleted")
    produce(ext, ext, own)  # the same event twice: a redelivery
    got_a = a.wait_for("message_new", timeout=15)
    assert got_a == {"message": ext["data"]["message"]}
    assert b.wait_for("message_new", timeout=5) == {"message": ext["data"]["message"]}

    produce(ext, deleted)  # redelivered again later, then a delete
    assert b.wait_for("message_deleted", timeout=15) == {
        "conversation_id": conv, "message_id": deleted["data"]["message"]["id"], "seq": 1}
    time.sleep(0.5)
    assert len(a.received("message_new")) == 1
    assert len(b.received("message_new")) == 1
