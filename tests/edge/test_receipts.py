"""Read receipts and unread counts across nodes and devices (PROTOCOL §7)."""
import math
import threading
import time

from realtime import envelope
from realtime.models import Conversation, ReadState
from tests import support
from tests.support import unique
from tests.workers.test_kafka_relay import consume_event_ids

WINDOW = support.SETTINGS.receipt_window_s
# PROTOCOL §7: a receipt within 2 s of the read (RECEIPT_WINDOW_S + the 0.25 s beat
# tick, with window 1 s in tests). On a loaded 2-core CI box the beat tick, the
# worker's pick-up, the flush and the pub/sub hop to the other node add up to more:
# this much slack on top of that bound.
RECEIPT_SLACK_S = 1.5
FLUSH_TICK_S = 0.25
RECEIPT_BOUND_S = WINDOW + FLUSH_TICK_S + RECEIPT_SLACK_S


def timed(client, event):
    """Record (monotonic arrival time, data) of one event, besides the usual log."""
    arrivals = []
    lock = threading.Lock()

    def on_event(data):
        with lock:
            arrivals.append((time.monotonic(), data))
        client._record(event, data)

    client.sio.on(event, on_event)
    return arrivals


def conversation(members, last_seq=0):
    conv = support.make_conversation(members)
    if last_seq:
        Conversation.objects(id=conv).update_one(set__last_seq=last_seq)
    return conv


def joined(clients, url, user, conv, **kwargs):
    c = clients(url, user=user, **kwargs)
    assert c.call("join_room", {"conversation_id": conv})["ok"]
    return c


def stored(conv, user):
    return ReadState.objects(conversation_id=conv, user_id=user).first()


def test_burst_of_reads_gives_one_receipt_per_window_with_the_final_watermark(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    conv = conversation([alice, bob], last_seq=500)
    b = joined(clients, nodes[1], bob, conv)
    receipts = timed(b, "read_receipt")
    # Three devices, so that 100 reads stay within the per-socket rate limit.
    devices = [joined(clients, nodes[0], alice, conv) for _ in range(3)]
    started = time.monotonic()
    for seq in range(1, 101):
        assert devices[seq % 3].call("message_read", {"conversation_id": conv, "seq": seq}) == {"ok": True}
    last_read_at = time.monotonic()
    b.wait_for("read_receipt", lambda e: e["seq"] == 100, timeout=RECEIPT_BOUND_S + 1)
    assert time.monotonic() - last_read_at <= RECEIPT_BOUND_S
    time.sleep(WINDOW + 0.5)  # nothing more may follow
    mine = [(t, e) for t, e in receipts if e["user_id"] == alice]
    seqs = [e["seq"] for _, e in mine]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 100, seqs
    # The count bound is what proves the coalescing (without it, ~100 receipts).
    assert len(mine) <= math.ceil((last_read_at - started) / WINDOW) + 1, seqs
    # The worker emits a pair's receipts at least WINDOW apart, but these are arrival
    # times: one receipt held up on the way (pub/sub, a busy node) and the next one
    # delivered promptly shrink the gap. 0.3 of a window leaves room for that and still
    # catches two flushes of one window at successive beat ticks (0.25 s apart).
    for (t1, _), (t2, _) in zip(mine, mine[1:]):
        assert t2 - t1 >= WINDOW * 0.3, [t for t, _ in mine]
    event = mine[-1][1]
    assert set(event) == {"conversation_id", "user_id", "seq", "read_at"} and event["read_at"].endswith("Z")
    state = stored(conv, alice)
    assert (state.seq, state.private_seq) == (100, 100)
    assert b.call("receipts_get", {"conversation_id": conv}) == {"ok": True, "watermarks": {alice: 100}}
    # The change reached Kafka chat.receipts.
    event_id = envelope.stable_event_id("receipt.updated", conv, alice, "100", "100")
    seen = consume_event_ids(support.SETTINGS.topic("receipts"), {event_id}, timeout=15)
    assert seen[event_id]["data"]["seq"] == 100 and seen[event_id]["type"] == "receipt.updated"


def test_backwards_and_capped_reads(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    conv = conversation([alice, bob], last_seq=10)
    a = joined(clients, nodes[0], alice, conv)
    b = joined(clients, nodes[1], bob, conv)
    assert a.call("message_read", {"conversation_id": conv, "seq": 8})["ok"]
    b.wait_for("read_receipt", lambda e: e["seq"] == 8)
    time.sleep(WINDOW)
    assert a.call("message_read", {"conversation_id": conv, "seq": 3})["ok"]
    assert a.call("message_read", {"conversation_id": conv, "seq": 0})["ok"]
    time.sleep(WINDOW + 0.8)
    assert [e["seq"] for e in b.received("read_receipt")] == [8]
    assert stored(conv, alice).seq == 8
    assert a.call("receipts_get", {"conversation_id": conv})["watermarks"] == {alice: 8}
    # Beyond the last seq: capped.
    assert a.call("message_read", {"conversation_id": conv, "seq": 1000})["ok"]
    b.wait_for("read_receipt", lambda e: e["seq"] == 10)
    assert stored(conv, alice).seq == 10


def test_private_read_reaches_only_the_readers_devices(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    conv = conversation([alice, bob], last_seq=10)
    a1 = joined(clients, nodes[0], alice, conv)
    a2 = clients(nodes[1], user=alice)  # another device, not in the room
    b = joined(clients, nodes[1], bob, conv)
    assert a1.call("message_read", {"conversation_id": conv, "seq": 7, "private": True}) == {"ok": True}
    expected = {"conversation_id": conv, "unread": 3, "last_read_seq": 7}
    assert a2.wait_for("unread_update") == expected
    assert a1.wait_for("unread_update") == expected
    time.sleep(WINDOW)
    assert b.received("read_receipt") == [] and a1.received("read_receipt") == []
    assert b.received("unread_update") == []
    assert b.call("receipts_get", {"conversation_id": conv})["watermarks"] == {}
    assert a2.call("unread_get")["conversations"] == {conv: 3}
    state = stored(conv, alice)
    assert (state.seq, state.private_seq) == (0, 7)


def test_unread_on_a_second_device_follows_reads_on_the_first(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    conv = conversation([alice, bob])
    b = joined(clients, nodes[1], bob, conv)
    for i in range(5):
        assert b.call("message_send", {"conversation_id": conv, "client_msg_id": f"m{i}", "body": f"b{i}"})["ok"]
    a1 = joined(clients, nodes[0], alice, conv)
    a2 = clients(nodes[1], user=alice)
    assert a2.call("unread_get") == {"ok": True, "conversations": {conv: 5}}
    assert a1.call("message_read", {"conversation_id": conv, "seq": 3})["ok"]
    assert a2.wait_for("unread_update") == {"conversation_id": conv, "unread": 2, "last_read_seq": 3}
    assert a2.call("unread_get")["conversations"] == {conv: 2}
    # A message arriving while reading counts; bob's own messages never count for bob.
    assert b.call("message_send", {"conversation_id": conv, "client_msg_id": "m5", "body": "more"})["ok"]
    assert a2.call("unread_get")["conversations"] == {conv: 3}
    assert conv not in b.call("unread_get")["conversations"]
    # Sending counts as reading up to one's own message.
    assert a1.call("message_send", {"conversation_id": conv, "client_msg_id": "a1", "body": "reply"})["ok"]
    assert conv not in a2.call("unread_get")["conversations"]
    a2.wait_for("unread_update", lambda e: e["unread"] == 0 and e["last_read_seq"] == 7)
    assert a1.call("message_read", {"conversation_id": conv, "seq": 7})["ok"]
    assert conv not in a1.call("unread_get")["conversations"]


def test_read_input_is_checked(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    conv = conversation([alice, bob], last_seq=3)
    a = clients(nodes[0], user=alice)
    bad = [{}, {"conversation_id": conv}, {"conversation_id": conv, "seq": "2"},
           {"conversation_id": conv, "seq": -1}, {"conversation_id": conv, "seq": True},
           {"conversation_id": conv, "seq": 1.5}, {"conversation_id": 7, "seq": 1},
           {"conversation_id": conv, "seq": 1, "private": "yes"}, "text"]
    for payload in bad:
        ack = a.call("message_read", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload", payload
    for payload in ({}, {"conversation_id": 3}):
        assert a.call("receipts_get", payload)["error"]["code"] == "invalid_payload"
    stranger = clients(nodes[0], user=unique("mallory"))
    assert stranger.call("message_read", {"conversation_id": conv, "seq": 1})["error"]["code"] == "forbidden"
    assert stranger.call("receipts_get", {"conversation_id": conv})["error"]["code"] == "forbidden"
    assert a.call("message_read", {"conversation_id": unique("nope"), "seq": 1})["error"]["code"] == "not_found"
    # A member who has not joined may still mark read.
    assert a.call("message_read", {"conversation_id": conv, "seq": 2}) == {"ok": True}
    time.sleep(WINDOW + 0.3)
    assert ReadState.objects(conversation_id=conv, user_id=stranger.user).first() is None
