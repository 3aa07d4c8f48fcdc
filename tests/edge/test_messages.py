"""Rooms and messages across two nodes (PROTOCOL §4), on eventlet and gevent."""
import threading
import time

from realtime import keys, timeutil
from realtime.models import Conversation, Message
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique


def pair(clients, nodes, kind="group", extra_members=()):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob, *extra_members], kind=kind)
    a = clients(nodes[0], user=alice)
    b = clients(nodes[1], user=bob)
    return conv, a, b


def send(client, conv, body="hello", cmid=None, **extra):
    return client.call("message_send", {"conversation_id": conv, "client_msg_id": cmid or unique("m"),
                                        "body": body, **extra})


def test_cross_node_delivery(clients, nodes):
    conv, a, b = pair(clients, nodes)
    assert a.call("join_room", {"conversation_id": conv}) == {"ok": True, "conversation_id": conv, "last_seq": 0}
    assert b.call("join_room", {"conversation_id": conv})["ok"]
    ack = send(a, conv, "hi bob", reply_to=None)
    assert ack["ok"]
    msg = ack["message"]
    assert msg["seq"] == 1 and msg["sender_id"] == a.user and msg["body"] == "hi bob"
    assert set(msg) == {"id", "conversation_id", "seq", "sender_id", "body", "reply_to", "created_at",
                        "edited_at", "client_msg_id"}
    assert b.wait_for("message_new") == {"message": msg}
    time.sleep(0.3)
    assert a.received("message_new") == [], "the sending socket must not get its own message"


def test_only_joined_sockets_receive(clients, nodes):
    conv, a, b = pair(clients, nodes)
    assert send(a, conv)["ok"]  # sending needs membership, not joining
    time.sleep(0.5)
    assert b.received("message_new") == []


def test_other_sockets_of_the_sender_receive(clients, nodes):
    conv, a, b = pair(clients, nodes)
    a2 = clients(nodes[1], user=a.user)
    a2.call("join_room", {"conversation_id": conv})
    msg = send(a, conv)["message"]
    assert a2.wait_for("message_new") == {"message": msg}


def test_non_member_forbidden_unknown_not_found(clients, nodes):
    conv, a, b = pair(clients, nodes)
    stranger = clients(nodes[0], user=unique("mallory"))
    assert stranger.call("join_room", {"conversation_id": conv})["error"]["code"] == "forbidden"
    assert send(stranger, conv)["error"]["code"] == "forbidden"
    assert stranger.call("history", {"conversation_id": conv})["error"]["code"] == "forbidden"
    assert a.call("join_room", {"conversation_id": unique("nope")})["error"]["code"] == "not_found"
    assert send(a, unique("nope"))["error"]["code"] == "not_found"
    assert Message.objects(conversation_id=conv).count() == 0


def test_retry_is_idempotent(clients, nodes):
    conv, a, b = pair(clients, nodes)
    b.call("join_room", {"conversation_id": conv})
    first = send(a, conv, "once", cmid="retry-1")["message"]
    again = send(a, conv, "once", cmid="retry-1")["message"]
    assert again == first
    b.wait_for("message_new")
    time.sleep(0.5)
    assert len(b.received("message_new")) == 1
    assert Message.objects(conversation_id=conv).count() == 1
    # The same client_msg_id from another sender is another message.
    assert send(b, conv, "mine", cmid="retry-1")["message"]["seq"] == 2
    # The same sender's client_msg_id in another conversation is a conflict, and stores nothing.
    other = support.make_conversation([a.user, b.user])
    assert send(a, other, "once", cmid="retry-1")["error"]["code"] == "conflict"
    assert Message.objects(conversation_id=other).count() == 0
    assert send(a, other, "twice", cmid="retry-2")["message"]["seq"] == 1


def test_concurrent_retries_store_one_message(clients, nodes):
    conv, a, b = pair(clients, nodes)
    a2 = clients(nodes[1], user=a.user)
    acks = []
    threads = [threading.Thread(target=lambda c=c: acks.append(send(c, conv, "x", cmid="same")))
               for c in (a, a2, a, a2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(ack["ok"] for ack in acks), acks
    assert len({ack["message"]["id"] for ack in acks}) == 1
    assert Message.objects(conversation_id=conv).count() == 1


def test_seq_is_gapless_under_concurrent_senders(clients, nodes):
    alice, bob, carol = unique("a"), unique("b"), unique("c")
    conv = support.make_conversation([alice, bob, carol])
    senders = [clients(nodes[0], user=alice), clients(nodes[1], user=bob), clients(nodes[0], user=carol),
               clients(nodes[1], user=alice)]
    seqs, errors = [], []

    def run(client):
        for i in range(10):
            ack = send(client, conv, f"m{i}")
            (seqs.append(ack["message"]["seq"]) if ack["ok"] else errors.append(ack))

    threads = [threading.Thread(target=run, args=(c,)) for c in senders]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert sorted(seqs) == list(range(1, 41))


def test_one_senders_messages_arrive_in_order_on_the_other_node(clients, nodes):
    conv, a, b = pair(clients, nodes)
    b.call("join_room", {"conversation_id": conv})
    n = 30
    done = threading.Event()
    acks = []

    def fire(i):
        a.sio.emit("message_send", {"conversation_id": conv, "client_msg_id": f"o{i}", "body": str(i)},
                   callback=lambda ack: (acks.append(ack), len(acks) == n and done.set()))

    for i in range(n):  # without waiting for acks: the server must keep the order
        fire(i)
    assert done.wait(10)
    support.eventually(lambda: len(b.received("message_new")) == n, timeout=5)
    bodies = [m["message"]["body"] for m in b.received("message_new")]
    seqs = [m["message"]["seq"] for m in b.received("message_new")]
    assert bodies == [str(i) for i in range(n)]
    assert seqs == list(range(1, n + 1))


def test_edit_and_delete(clients, nodes):
    conv, a, b = pair(clients, nodes)
    b.call("join_room", {"conversation_id": conv})
    msg = send(a, conv, "tpyo")["message"]
    assert b.call("message_edit", {"message_id": msg["id"], "body": "hack"})["error"]["code"] == "forbidden"
    edited = a.call("message_edit", {"message_id": msg["id"], "body": "typo"})
    assert edited["ok"] and edited["message"]["body"] == "typo" and edited["message"]["edited_at"]
    assert b.wait_for("message_updated")["message"] == edited["message"]
    assert b.call("message_delete", {"message_id": msg["id"]})["error"]["code"] == "forbidden"
    assert a.call("message_delete", {"message_id": msg["id"]}) == {"ok": True}
    assert b.wait_for("message_deleted") == {"conversation_id": conv, "message_id": msg["id"], "seq": 1}
    tomb = {"id": msg["id"], "conversation_id": conv, "seq": 1, "sender_id": a.user, "deleted": True, "body": None}
    assert a.call("history", {"conversation_id": conv})["messages"] == [tomb]
    assert a.call("sync", {"conversations": {conv: 0}})["conversations"][conv]["messages"] == [tomb]
    assert a.call("message_edit", {"message_id": msg["id"], "body": "zombie"})["error"]["code"] == "not_found"
    assert a.call("message_delete", {"message_id": unique("nope")})["error"]["code"] == "not_found"


def test_sync_returns_what_a_disconnected_client_missed(clients, nodes):
    conv, a, b = pair(clients, nodes)
    b.call("join_room", {"conversation_id": conv})
    send(a, conv, "before")
    seen = b.wait_for("message_new")["message"]["seq"]
    b.close()
    missed = [send(a, conv, f"missed {i}")["message"] for i in range(5)]
    b2 = clients(nodes[1], user=b.user)
    res = b2.call("sync", {"conversations": {conv: seen, unique("not-mine"): 0}})
    assert res["ok"]
    assert list(res["conversations"]) == [conv]
    got = res["conversations"][conv]
    assert got == {"messages": missed, "last_seq": 6, "recovered": True}


def test_sync_pages_of_300(clients, nodes):
    alice = unique("alice")
    conv = support.make_conversation([alice])
    # Written directly, as the message service would for a busy conversation.
    now = timeutil.utc_datetime(time.time())
    Message.objects.insert([Message(id=f"{conv}-{i}", conversation_id=conv, seq=i, sender_id="svc",
                                    body=f"b{i}", created_at=now) for i in range(1, 351)], load_bulk=False)
    a = clients(nodes[0], user=alice)
    first = a.call("sync", {"conversations": {conv: 0}})["conversations"][conv]
    assert len(first["messages"]) == 300 and first["recovered"] is False
    assert [m["seq"] for m in first["messages"]] == list(range(1, 301))
    second = a.call("sync", {"conversations": {conv: 300}})["conversations"][conv]
    assert [m["seq"] for m in second["messages"]] == list(range(301, 351))
    assert second["recovered"] is True and second["last_seq"] == 350
    # history: newest `limit` before before_seq, ascending; limit clamped to 100
    hist = a.call("history", {"conversation_id": conv, "before_seq": 11, "limit": 3})["messages"]
    assert [m["seq"] for m in hist] == [8, 9, 10]
    assert len(a.call("history", {"conversation_id": conv, "limit": 500})["messages"]) == 100
    assert [m["seq"] for m in a.call("history", {"conversation_id": conv})["messages"]][-1] == 350
    # A send after messages the service wrote continues the sequence without a gap.
    assert send(a, conv)["message"]["seq"] == 351


def test_leave_room_stops_delivery(clients, nodes):
    conv, a, b = pair(clients, nodes)
    b.call("join_room", {"conversation_id": conv})
    assert b.call("leave_room", {"conversation_id": conv}) == {"ok": True, "conversation_id": conv}
    assert b.call("leave_room", {"conversation_id": conv})["ok"]  # idempotent
    send(a, conv)
    time.sleep(0.5)
    assert b.received("message_new") == []


def test_readers_count_a_message_before_the_sweep_writes_its_last_seq(clients, nodes):
    """`conversations.last_seq` follows a send by up to a beat tick (PROTOCOL §4); the
    Redis seq hint counts the message from before its emit, and every reader takes it."""
    conv, a, b = pair(clients, nodes)
    r = make_redis(support.SETTINGS)
    sweep = r.lock(keys.LAST_SEQ_SWEEP_LOCK, timeout=60)  # the stack's sweep stays out meanwhile
    assert sweep.acquire(blocking=True, blocking_timeout=20)
    try:
        b.call("join_room", {"conversation_id": conv})
        sent = [send(a, conv, f"m{i}")["message"] for i in range(2)]
        b.wait_for("message_new")
        assert Conversation.objects.get(id=conv).last_seq in (None, 0), "the send itself wrote last_seq"
        b2 = clients(nodes[0], user=b.user)
        assert b2.call("join_room", {"conversation_id": conv})["last_seq"] == 2
        assert b2.call("sync", {"conversations": {conv: 2}})["conversations"][conv] == {
            "messages": [], "last_seq": 2, "recovered": True}
        assert b2.call("unread_get", {})["conversations"] == {conv: 2}
        assert b2.call("message_read", {"conversation_id": conv, "seq": sent[-1]["seq"]})["ok"]
        assert b2.call("receipts_get", {"conversation_id": conv})["watermarks"][b.user] == 2
    finally:
        sweep.release()
    support.eventually(lambda: Conversation.objects.get(id=conv).last_seq == 2, timeout=10,
                       message="the beat sweep advances last_seq")
