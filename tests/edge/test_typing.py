"""Typing indicators across nodes (PROTOCOL §6), against the running stack."""
import os
import signal
import socket
import time

from tests import support
from tests.support import unique

EXPIRY = support.SETTINGS.typing_expiry_s
# PROTOCOL §6: after a node death the stop comes within TYPING_EXPIRY_S + about 1 s
# (the beat sweep's tick). The sweep runs on a worker that a loaded machine delays;
# allow for that as tests/edge/test_calls.py does for its beat timers.
SWEEP_TICK_S = 1.0
TIMER_SLACK_S = 4.0


def typing_events(client, conv, user=None):
    return [e for e in client.received("user_typing")
            if e["conversation_id"] == conv and (user is None or e["user_id"] == user)]


def drop(client):
    """Close the client's TCP connection at once: the server sees the disconnect
    now (a clean close can take seconds on some servers, longer than the expiry)."""
    client.sio.eio.ws.sock.shutdown(socket.SHUT_RDWR)


def before_expiry(started: float) -> float:
    """How long a test may wait for a stop that must not be the expiry's: until shortly
    before the typing started at `started` would expire (a loaded machine may take
    longer than a fixed second, and the expiry would stop it anyway)."""
    return started + EXPIRY - 0.2 - time.monotonic()


def pair_in_room(clients, nodes, extra_members=()):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob, *extra_members])
    a = clients(nodes[0], user=alice)
    b = clients(nodes[1], user=bob)
    for c in (a, b):
        assert c.call("join_room", {"conversation_id": conv})["ok"]
    return alice, bob, conv, a, b


def test_typing_reaches_the_other_node_and_not_the_typist(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    a2 = clients(nodes[1], user=alice)  # the typist's second device, in the room too
    assert a2.call("join_room", {"conversation_id": conv})["ok"]
    assert a.call("typing_start", {"conversation_id": conv}) == {"ok": True}
    event = b.wait_for("user_typing")
    assert event == {"conversation_id": conv, "user_id": alice, "typing": True}
    assert a.call("typing_stop", {"conversation_id": conv}) == {"ok": True}
    b.wait_for("user_typing", lambda e: e["typing"] is False)
    time.sleep(0.3)
    assert typing_events(a, conv) == [] and typing_events(a2, conv) == []
    assert [e["typing"] for e in typing_events(b, conv)] == [True, False]


def test_refresh_sends_no_duplicate_and_keeps_typing(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    a.call("typing_start", {"conversation_id": conv})
    b.wait_for("user_typing")
    # Refresh every quarter expiry for longer than one expiry: still one event. (Every
    # half expiry left only EXPIRY/2 for the refresh's round trip on a loaded machine;
    # a refresh that lands after the deadline rightly ends typing.)
    started = time.monotonic()
    while time.monotonic() - started < EXPIRY * 1.5:
        time.sleep(EXPIRY / 4)
        assert a.call("typing_start", {"conversation_id": conv})["ok"]
    assert [e["typing"] for e in typing_events(b, conv)] == [True]
    a.call("typing_stop", {"conversation_id": conv})
    a.call("typing_stop", {"conversation_id": conv})  # a second stop is no transition
    b.wait_for("user_typing", lambda e: e["typing"] is False)
    time.sleep(0.3)
    assert [e["typing"] for e in typing_events(b, conv)] == [True, False]


def test_typing_expires_without_refresh(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    t0 = time.monotonic()
    a.call("typing_start", {"conversation_id": conv})
    b.wait_for("user_typing")
    b.wait_for("user_typing", lambda e: e["typing"] is False, timeout=EXPIRY + 3)
    elapsed = time.monotonic() - t0
    assert EXPIRY - 0.3 <= elapsed <= EXPIRY + 2.5, elapsed
    assert [e["typing"] for e in typing_events(b, conv)] == [True, False]


def test_sending_a_message_ends_typing(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    started = time.monotonic()
    a.call("typing_start", {"conversation_id": conv})
    b.wait_for("user_typing")
    assert a.call("message_send", {"conversation_id": conv, "client_msg_id": "m1", "body": "hi"})["ok"]
    b.wait_for("user_typing", lambda e: e["typing"] is False, timeout=before_expiry(started))
    b.wait_for("message_new")


def test_last_socket_disconnect_ends_typing(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    other = clients(nodes[1], user=alice)  # connected, but not in this room
    started = time.monotonic()
    a.call("typing_start", {"conversation_id": conv})
    b.wait_for("user_typing")
    drop(a)
    b.wait_for("user_typing", lambda e: e["typing"] is False, timeout=before_expiry(started))
    assert other.sio.connected


def test_disconnect_of_one_of_two_joined_sockets_keeps_typing(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    a2 = clients(nodes[1], user=alice)
    a2.call("join_room", {"conversation_id": conv})
    a.call("typing_start", {"conversation_id": conv})
    b.wait_for("user_typing")
    drop(a)
    time.sleep(min(0.8, EXPIRY / 3))
    assert [e["typing"] for e in typing_events(b, conv)] == [True]
    refreshed = time.monotonic()
    assert a2.call("typing_start", {"conversation_id": conv})["ok"]  # a refresh: no event
    drop(a2)
    b.wait_for("user_typing", lambda e: e["typing"] is False, timeout=before_expiry(refreshed))


def test_typing_needs_a_joined_member(clients, nodes):
    alice, bob, conv, a, b = pair_in_room(clients, nodes)
    stranger = clients(nodes[0], user=unique("mallory"))
    for event in ("typing_start", "typing_stop"):
        ack = stranger.call(event, {"conversation_id": conv})
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    carol = unique("carol")
    other_conv = support.make_conversation([alice, carol])
    ack = a.call("typing_start", {"conversation_id": other_conv})  # member, not joined
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    for payload in ({}, {"conversation_id": 5}, {"conversation_id": ""}, "x"):
        ack = a.call("typing_start", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload", payload
    time.sleep(0.3)
    assert typing_events(b, conv) == []


def test_typing_of_a_dead_node_ends_by_the_sweep(clients):
    """The typist's node is killed: its timer is gone, the beat sweep ends typing."""
    proc = support.start_edge(5021, unique("tdead"))
    try:
        alice, bob = unique("alice"), unique("bob")
        conv = support.make_conversation([alice, bob])
        a = clients("http://127.0.0.1:5021", user=alice)
        b = clients(support.EDGE2, user=bob)
        for c in (a, b):
            c.call("join_room", {"conversation_id": conv})
        a.call("typing_start", {"conversation_id": conv})
        b.wait_for("user_typing")
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        bound = EXPIRY + SWEEP_TICK_S + TIMER_SLACK_S
        b.wait_for("user_typing", lambda e: e["typing"] is False, timeout=bound + 1)
        assert time.monotonic() - t0 <= bound
    finally:
        support.stop_process(proc)
