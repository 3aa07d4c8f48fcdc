"""Calls (PROTOCOL §10) with python-socketio clients on two nodes.

`make test` runs the stack with CALL_RING_TIMEOUT_S=3 and CALL_RECONNECT_GRACE_S=2.
"""
import threading
import time

import pytest

from realtime import envelope
from realtime.models import Call
from tests import support
from tests.support import unique
from tests.workers.test_kafka_relay import consume_event_ids

RING_S = support.SETTINGS.call_ring_timeout_s
GRACE_S = support.SETTINGS.call_reconnect_grace_s
# Timers fire from a 0.5 s beat sweep; allow for that and a loaded machine.
TIMER_SLACK_S = 4.0

OFFER = {"type": "offer", "sdp": "v=0 offer"}
ANSWER = {"type": "answer", "sdp": "v=0 answer"}


def ended_with(reason):
    return lambda e: e["reason"] == reason


def test_direct_call_rings_every_device_first_answer_wins_and_signals_flow(clients, nodes):
    n1, n2 = nodes
    alice, bob, mallory = unique("alice"), unique("bob"), unique("mallory")
    conv = support.make_conversation([alice, bob], kind="direct")
    a = clients(n1, user=alice, device_id="a-phone")
    b_phone = clients(n2, user=bob, device_id="b-phone")
    b_laptop = clients(n1, user=bob, device_id="b-laptop")
    m = clients(n2, user=mallory)

    ack = a.call("call_initiate", {"conversation_id": conv, "media": "video", "sdp": OFFER})
    assert ack["ok"] is True, ack
    call_id = ack["call_id"]
    assert isinstance(ack["ice_servers"], list)
    for device in (b_phone, b_laptop):
        incoming = device.wait_for("call_incoming")
        assert incoming["call_id"] == call_id and incoming["conversation_id"] == conv
        assert incoming["from"] == {"user_id": alice, "device_id": "a-phone"}
        assert incoming["media"] == "video" and incoming["sdp"] == OFFER and incoming["group"] is False
        assert incoming["expires_at"].endswith("Z")

    # An outsider can neither answer nor signal.
    assert m.call("call_answer", {"call_id": call_id})["error"]["code"] == "forbidden"
    assert m.call("call_signal", {"call_id": call_id, "to_user_id": alice, "kind": "ice_candidate",
                                  "data": {}})["error"]["code"] == "forbidden"

    answered = b_phone.call("call_answer", {"call_id": call_id, "sdp": ANSWER})
    assert answered["ok"] is True and isinstance(answered["ice_servers"], list)
    got = a.wait_for("call_answered")
    assert got == {"call_id": call_id, "user_id": bob, "device_id": "b-phone", "sdp": ANSWER}
    assert b_laptop.wait_for("call_ended")["reason"] == "answered_elsewhere"
    assert b_laptop.call("call_answer", {"call_id": call_id})["error"]["code"] == "conflict"

    # Signals go to the answering device only.
    assert a.call("call_signal", {"call_id": call_id, "to_user_id": bob, "kind": "ice_candidate",
                                  "data": {"candidate": "c1"}})["ok"]
    sig = b_phone.wait_for("call_signal")
    assert sig == {"call_id": call_id, "from_user_id": alice, "from_device_id": "a-phone",
                   "kind": "ice_candidate", "data": {"candidate": "c1"}}
    assert b_phone.call("call_signal", {"call_id": call_id, "to_user_id": alice, "to_device_id": "a-phone",
                                        "kind": "renegotiate", "data": OFFER})["ok"]
    assert a.wait_for("call_signal")["kind"] == "renegotiate"
    assert b_laptop.call("call_signal", {"call_id": call_id, "to_user_id": alice, "kind": "offer",
                                         "data": OFFER})["error"]["code"] == "forbidden"
    big = {"type": "offer", "sdp": "x" * (33 * 1024)}
    assert a.call("call_signal", {"call_id": call_id, "to_user_id": bob, "kind": "offer",
                                  "data": big})["error"]["code"] == "too_large"
    time.sleep(0.3)
    assert not b_laptop.received("call_signal")

    time.sleep(1.1)
    assert a.call("call_end", {"call_id": call_id})["ok"]
    for client in (a, b_phone):
        ended = client.wait_for("call_ended", ended_with("hangup"))
        assert ended["call_id"] == call_id and ended["ended_by"] == alice and ended["duration_s"] >= 1

    record = support.eventually(lambda: Call.objects(id=call_id, end_reason="hangup").first())
    assert record.caller_id == alice and record.callee_ids == [bob] and record.media == "video"
    assert [(p.user_id, p.device_id) for p in record.participants] == [(alice, "a-phone"), (bob, "b-phone")]
    assert record.answered_at and record.ended_at and record.duration_s >= 1


def test_call_events_reach_kafka(clients):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    a, b = clients(support.EDGE1, user=alice), clients(support.EDGE2, user=bob)
    call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
    b.wait_for("call_incoming")
    assert b.call("call_answer", {"call_id": call_id})["ok"]
    assert b.call("call_end", {"call_id": call_id})["ok"]
    want = {envelope.stable_event_id(f"call.{k}", call_id): k for k in ("started", "answered", "ended")}
    seen = consume_event_ids(support.SETTINGS.topic("calls"), set(want), timeout=20)
    assert set(seen) == set(want)
    ended = seen[envelope.stable_event_id("call.ended", call_id)]
    assert ended["type"] == "call.ended" and ended["conversation_id"] == conv
    assert ended["data"]["call"]["end_reason"] == "hangup" and ended["data"]["call"]["ended_by"] == bob


def test_decline_ends_the_call_for_the_caller(clients):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    a, b = clients(support.EDGE1, user=alice), clients(support.EDGE2, user=bob)
    call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
    b.wait_for("call_incoming")
    assert b.call("call_reject", {"call_id": call_id, "reason": "bogus"})["error"]["code"] == "invalid_payload"
    assert b.call("call_reject", {"call_id": call_id, "reason": "declined"})["ok"]
    ended = a.wait_for("call_ended")
    assert ended == {"call_id": call_id, "reason": "declined", "ended_by": bob, "duration_s": 0}
    assert b.call("call_answer", {"call_id": call_id})["error"]["code"] == "conflict"


def test_callee_in_a_call_is_busy_without_ringing(clients):
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    ab = support.make_conversation([alice, bob], kind="direct")
    cb = support.make_conversation([carol, bob], kind="direct")
    a, b, c = (clients(support.EDGE1, user=alice), clients(support.EDGE2, user=bob),
               clients(support.EDGE2, user=carol))
    first = a.call("call_initiate", {"conversation_id": ab, "media": "audio"})["call_id"]
    b.wait_for("call_incoming")
    assert b.call("call_answer", {"call_id": first})["ok"]
    second = c.call("call_initiate", {"conversation_id": cb, "media": "audio"})
    assert second["ok"], second
    ended = c.wait_for("call_ended")
    assert ended["call_id"] == second["call_id"] and ended["reason"] == "busy" and ended["ended_by"] is None
    time.sleep(0.3)
    assert [e["call_id"] for e in b.received("call_incoming")] == [first]
    # The caller of an ongoing call cannot start another one.
    assert a.call("call_initiate", {"conversation_id": ab, "media": "audio"})["error"]["code"] == "conflict"
    assert a.call("call_end", {"call_id": first})["ok"]


def test_unanswered_call_ends_no_answer_after_the_ring_timeout(clients):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    a, b = clients(support.EDGE1, user=alice), clients(support.EDGE2, user=bob)
    started = time.monotonic()
    call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
    b.wait_for("call_incoming")
    for client in (a, b):
        ended = client.wait_for("call_ended", timeout=RING_S + TIMER_SLACK_S)
        assert ended == {"call_id": call_id, "reason": "no_answer", "ended_by": None, "duration_s": 0}
    assert time.monotonic() - started >= RING_S - 0.2
    assert b.call("call_answer", {"call_id": call_id})["error"]["code"] == "conflict"
    record = support.eventually(lambda: Call.objects(id=call_id, end_reason="no_answer").first())
    assert record.answered_at is None


def _answered_call(clients, bob_device="b1"):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    a = clients(support.EDGE1, user=alice, device_id="a1")
    b = clients(support.EDGE2, user=bob, device_id=bob_device)
    call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
    b.wait_for("call_incoming")
    assert b.call("call_answer", {"call_id": call_id})["ok"]
    a.wait_for("call_answered")
    return alice, bob, a, b, call_id


def test_participant_gone_past_the_grace_ends_connection_lost(clients):
    alice, bob, a, b, call_id = _answered_call(clients)
    lost_at = time.monotonic()
    b.close()
    ended = a.wait_for("call_ended", timeout=GRACE_S + TIMER_SLACK_S)
    assert ended["call_id"] == call_id and ended["reason"] == "connection_lost" and ended["ended_by"] is None
    assert time.monotonic() - lost_at >= GRACE_S - 0.2


def test_participant_who_reconnects_in_time_keeps_the_call(clients):
    alice, bob, a, b, call_id = _answered_call(clients, bob_device="b1")
    b.close()
    time.sleep(GRACE_S / 3)
    again = clients(support.EDGE1, user=bob, device_id="b1")   # another node, same device
    time.sleep(GRACE_S + 1.5)
    assert not a.received("call_ended")
    assert a.call("call_signal", {"call_id": call_id, "to_user_id": bob, "kind": "ice_candidate",
                                  "data": {"candidate": "after-reconnect"}})["ok"]
    assert again.wait_for("call_signal")["data"] == {"candidate": "after-reconnect"}
    assert again.call("call_end", {"call_id": call_id})["ok"]
    assert a.wait_for("call_ended")["reason"] == "hangup"


def test_glare_ends_with_one_call(clients):
    for _ in range(3):
        alice, bob = unique("alice"), unique("bob")
        conv = support.make_conversation([alice, bob], kind="direct")
        a, b = clients(support.EDGE1, user=alice), clients(support.EDGE2, user=bob)
        acks = {}
        barrier = threading.Barrier(2)

        def dial(name, client):
            barrier.wait()
            acks[name] = client.call("call_initiate", {"conversation_id": conv, "media": "audio"})

        threads = [threading.Thread(target=dial, args=(n, c)) for n, c in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [k for k, v in acks.items() if v["ok"]]
        assert len(winners) == 1, acks
        loser = "b" if winners == ["a"] else "a"
        call_id = acks[winners[0]]["call_id"]
        assert acks[loser]["error"]["code"] == "conflict" and acks[loser]["call_id"] == call_id
        callee = b if winners == ["a"] else a
        assert callee.wait_for("call_incoming")["call_id"] == call_id
        assert callee.call("call_answer", {"call_id": call_id})["ok"]
        assert callee.call("call_end", {"call_id": call_id})["ok"]
        time.sleep(0.2)
        assert len(a.received("call_incoming")) + len(b.received("call_incoming")) == 1


def test_group_call_join_leave_and_end_with_the_last(clients):
    users = [unique(n) for n in ("alice", "bob", "carol", "dave")]
    alice, bob, carol, dave = users
    outsider = unique("eve")
    conv = support.make_conversation(users, kind="group")
    a, b, c, d = (clients(support.EDGE1 if i % 2 == 0 else support.EDGE2, user=u, device_id=f"{u}-d")
                  for i, u in enumerate(users))
    e = clients(support.EDGE1, user=outsider)
    ack = a.call("call_initiate", {"conversation_id": conv, "media": "video", "callee_ids": [bob, carol]})
    call_id = ack["call_id"]
    assert b.wait_for("call_incoming")["group"] is True
    c.wait_for("call_incoming")
    time.sleep(0.2)
    assert not d.received("call_incoming")

    joined = b.call("call_answer", {"call_id": call_id})
    assert joined["ok"] and joined["participants"] == [
        {"user_id": alice, "device_id": f"{alice}-d"}, {"user_id": bob, "device_id": f"{bob}-d"}]
    assert a.wait_for("call_answered")["user_id"] == bob
    assert a.wait_for("call_participant_joined") == {"call_id": call_id, "user_id": bob, "device_id": f"{bob}-d"}

    assert e.call("call_join", {"call_id": call_id})["error"]["code"] == "forbidden"
    dj = d.call("call_join", {"call_id": call_id})
    assert dj["ok"] and len(dj["participants"]) == 3
    for client in (a, b):
        client.wait_for("call_participant_joined", lambda ev: ev["user_id"] == dave)
    # Mesh signaling between group participants.
    assert d.call("call_signal", {"call_id": call_id, "to_user_id": bob, "kind": "offer", "data": OFFER})["ok"]
    assert b.wait_for("call_signal")["from_user_id"] == dave
    # Carol never answers: the ring stops, the call goes on.
    assert c.wait_for("call_ended", timeout=RING_S + TIMER_SLACK_S)["reason"] == "no_answer"
    assert not a.received("call_ended")

    assert a.call("call_leave", {"call_id": call_id})["ok"]
    for client in (b, d):
        client.wait_for("call_participant_left", lambda ev: ev["user_id"] == alice)
    assert b.call("call_leave", {"call_id": call_id})["ok"]
    d.wait_for("call_participant_left", lambda ev: ev["user_id"] == bob)
    assert not d.received("call_ended")
    assert d.call("call_leave", {"call_id": call_id})["ok"]
    for client in (a, b, c, d):
        ended = client.wait_for("call_ended", lambda ev: ev["reason"] == "hangup")
        assert ended["ended_by"] == dave and ended["duration_s"] >= 0
    record = support.eventually(lambda: Call.objects(id=call_id, status="ended").first())
    assert record.group is True and {p.user_id for p in record.participants} == {alice, bob, dave}


def test_group_call_holds_at_most_eight(clients):
    users = [unique(f"u{i}") for i in range(9)]
    conv = support.make_conversation(users, kind="group")
    socks = [clients(support.EDGE1 if i % 2 else support.EDGE2, user=u) for i, u in enumerate(users)]
    call_id = socks[0].call("call_initiate", {"conversation_id": conv, "media": "audio",
                                              "callee_ids": [users[1]]})["call_id"]
    for s in socks[1:8]:
        assert s.call("call_join", {"call_id": call_id})["ok"]
    ninth = socks[8].call("call_join", {"call_id": call_id})
    assert ninth["error"]["code"] == "conflict"
    # A second call in the same conversation names the one to join.
    again = socks[8].call("call_initiate", {"conversation_id": conv, "media": "audio"})
    assert again["error"]["code"] == "conflict" and again["call_id"] == call_id
    assert socks[0].call("call_end", {"call_id": call_id})["ok"]
    for s in socks[:8]:
        s.wait_for("call_ended")


@pytest.mark.parametrize("payload, code", [
    ({"conversation_id": "nope", "media": "audio"}, "not_found"),
    ({"media": "audio"}, "invalid_payload"),
    ({"conversation_id": "x", "media": "smell"}, "invalid_payload"),
])
def test_bad_initiate(clients, payload, code):
    a = clients(support.EDGE1, user=unique("alice"))
    assert a.call("call_initiate", payload)["error"]["code"] == code


def test_initiate_refuses_non_members_and_oversize_sdp(clients):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    m = clients(support.EDGE1, user=unique("mallory"))
    assert m.call("call_initiate", {"conversation_id": conv, "media": "audio"})["error"]["code"] == "forbidden"
    a = clients(support.EDGE1, user=alice)
    big = {"type": "offer", "sdp": "x" * (33 * 1024)}
    assert a.call("call_initiate", {"conversation_id": conv, "media": "audio",
                                    "sdp": big})["error"]["code"] == "too_large"
    assert a.call("call_answer", {"call_id": "call-nope"})["error"]["code"] == "not_found"


def test_participant_on_a_node_that_dies_is_lost_after_node_timeout_and_grace(clients):
    """No disconnect hook runs on a killed node: the sweep finds its sockets by the
    node's missing heartbeats and starts their reconnect grace."""
    proc = support.start_edge(5021, unique("calls-doomed"))
    try:
        alice, bob = unique("alice"), unique("bob")
        conv = support.make_conversation([alice, bob], kind="direct")
        a = clients(support.EDGE1, user=alice)
        # Ready means subscribed to the cross-node channel (test_http), so bob, the
        # fresh node's first client, gets call_incoming from EDGE1.
        b = clients("http://127.0.0.1:5021", user=bob, device_id="b-doomed")
        call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
        b.wait_for("call_incoming")
        assert b.call("call_answer", {"call_id": call_id})["ok"]
        proc.kill()
        proc.wait()
        ended = a.wait_for("call_ended", timeout=support.SETTINGS.presence_node_timeout_s + GRACE_S
                           + 2 * TIMER_SLACK_S)
        assert ended["call_id"] == call_id and ended["reason"] == "connection_lost"
    finally:
        support.stop_process(proc)


def test_a_stale_in_call_pointer_does_not_make_a_callee_busy(clients):
    """A process that died between ending a call and releasing its users leaves a
    pointer to a call that is over: that user is not busy."""
    import redis as redis_lib

    from realtime import keys
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    r = redis_lib.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    r.set(keys.call_of_user(bob), "call-that-ended-long-ago", ex=60)
    a, b = clients(support.EDGE1, user=alice), clients(support.EDGE2, user=bob)
    call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
    assert b.wait_for("call_incoming")["call_id"] == call_id
    assert b.call("call_answer", {"call_id": call_id})["ok"]
    assert r.get(keys.call_of_user(bob)) == call_id
    assert b.call("call_end", {"call_id": call_id})["ok"]
    assert r.get(keys.call_of_user(bob)) is None
