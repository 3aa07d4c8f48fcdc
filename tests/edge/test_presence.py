"""Presence across edge nodes (PROTOCOL §5), against the running stack.

The test stack runs PRESENCE_OFFLINE_GRACE_S=1 and PRESENCE_NODE_TIMEOUT_S=4
(scripts/test.sh), so every bound here is short.
"""
import subprocess
import threading
import time

import pytest
import redis

from realtime import connections, keys
from tests import support
from tests.support import unique

GRACE = support.SETTINGS.presence_offline_grace_s
NODE_TIMEOUT = support.SETTINGS.presence_node_timeout_s


def statuses(client, user_id):
    return [e["status"] for e in client.received("user_presence") if e["user_id"] == user_id]


def wait_status(client, user_id, status, timeout=support.SHORT_WAIT_S):
    return client.wait_for("user_presence", lambda e: e["user_id"] == user_id and e["status"] == status,
                           timeout=timeout)


def wait_statuses(client, user_id, expected, timeout=support.SHORT_WAIT_S):
    """Wait until the subscriber was told exactly `expected`; returns the last event."""
    support.eventually(lambda: statuses(client, user_id) == expected, timeout=timeout,
                       message=f"{user_id} announced as {expected}")
    return [e for e in client.received("user_presence") if e["user_id"] == user_id][-1]


def subscribe(client, *user_ids):
    ack = client.call("presence_subscribe", {"user_ids": list(user_ids)})
    assert ack["ok"] is True, ack
    return ack


def test_statuses_are_seen_by_a_subscriber_on_the_other_node(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    support.make_conversation([alice, bob])
    b = clients(nodes[1], user=bob)
    ack = subscribe(b, alice)
    assert ack["presences"] == {alice: {"status": "offline", "message": None, "last_seen": None}}
    assert ack["forbidden"] == []

    a = clients(nodes[0], user=alice)
    wait_status(b, alice, "online")
    assert a.call("presence_update", {"status": "busy", "message": "in a meeting"}) == {
        "ok": True, "status": "busy", "message": "in a meeting"}
    busy = wait_status(b, alice, "busy")
    assert busy == {"user_id": alice, "status": "busy", "message": "in a meeting", "last_seen": None}
    a.call("presence_update", {"status": "invisible"})
    invisible = wait_status(b, alice, "offline")
    assert invisible["message"] is None and invisible["last_seen"] is None
    a.call("presence_update", {"status": "away"})
    wait_status(b, alice, "away")
    # A refresh of the same status is no change: nothing is announced.
    a.call("presence_update", {"status": "away"})
    time.sleep(1.3)
    assert statuses(b, alice) == ["online", "busy", "offline", "away"]

    # A new subscriber gets the current state in the ack, on either node.
    b2 = clients(nodes[0], user=bob)
    assert subscribe(b2, alice)["presences"][alice]["status"] == "away"

    closed_at = time.time()
    a.close()
    offline = wait_statuses(b, alice, ["online", "busy", "offline", "away", "offline"], timeout=GRACE + 4)
    last_seen = support.timeutil.from_iso(offline["last_seen"])
    assert closed_at - 1 <= last_seen <= time.time()
    # The chosen status outlives the session; the snapshot shows offline meanwhile.
    assert subscribe(b2, alice)["presences"][alice] == {
        "status": "offline", "message": None, "last_seen": offline["last_seen"]}


def test_grace_is_respected_both_ways(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    support.make_conversation([alice, bob])
    b = clients(nodes[1], user=bob)
    subscribe(b, alice)
    a = clients(nodes[0], user=alice)
    wait_status(b, alice, "online")
    time.sleep(1.1)  # outside the coalescing window of that announcement

    # A page reload: closed and back within the grace, on the other node. The new
    # page's socket connects beforehand, unauthenticated (not the user's yet), and
    # authenticates once the node saw the close: the user really had no socket for a
    # moment, and the comeback costs one round trip, not a whole connect that a loaded
    # machine can stretch past the 1 s grace. Its ack comes after the registration,
    # so when it is back is known, not hoped. The close runs aside: python-socketio's
    # client can take seconds to return from closing a socket of a gevent node,
    # though the node sees the close at once.
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    reload = clients(nodes[1], auth_data={})
    threading.Thread(target=a.close, daemon=True).start()
    support.eventually(lambda: not connections.is_connected(r, alice), message="the close seen by the node")
    ack = reload.call("authenticate", {"token": support.token(alice)})
    back_at = time.time()
    assert ack["ok"] is True and ack["user_id"] == alice, ack
    a = reload
    # When the node counted the close (its clock, the same wall clock as ours).
    offline_since = float(support.eventually(lambda: r.hget(keys.presence(alice), "offline_since"),
                                             message="the close recorded"))
    if back_at >= offline_since + GRACE:
        # Not a reload within the grace after all (a stalled machine): "offline"
        # would be right, so there is nothing to check.
        pytest.skip(f"reconnect registered {back_at - offline_since:.2f}s after the close, past the grace")
    time.sleep(max(0.0, offline_since + GRACE + 1.0 - time.time()))
    assert statuses(b, alice) == ["online"]

    # A real close: offline only after the grace, then within a short bound.
    closed_at = time.monotonic()
    a.close()
    wait_status(b, alice, "offline", timeout=GRACE + 4)
    elapsed = time.monotonic() - closed_at
    assert elapsed >= GRACE - 0.05, elapsed
    assert statuses(b, alice) == ["online", "offline"]


def test_multi_device_closing_one_device_keeps_the_user_online(clients, nodes):
    alice, bob = unique("alice"), unique("bob")
    support.make_conversation([alice, bob])
    b = clients(nodes[0], user=bob)
    subscribe(b, alice)
    phone = clients(nodes[0], user=alice, device_id="phone")
    laptop = clients(nodes[1], user=alice, device_id="laptop")
    wait_status(b, alice, "online")
    phone.close()
    time.sleep(GRACE + 1.0)
    assert statuses(b, alice) == ["online"]
    laptop.close()
    wait_status(b, alice, "offline", timeout=GRACE + 4)


def test_a_strangers_subscription_is_refused_without_data(clients, nodes):
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    support.make_conversation([alice, bob])
    clients(nodes[0], user=alice).call("presence_update", {"status": "busy", "message": "secret plans"})
    c = clients(nodes[1], user=carol)
    ack = subscribe(c, alice, bob, carol)
    assert ack["forbidden"] == [alice, bob]
    assert set(ack["presences"]) == {carol}      # one's own presence is always visible
    time.sleep(1.2)
    assert c.received("user_presence") == [] or all(e["user_id"] == carol for e in c.received("user_presence"))
    # Unsubscribe is idempotent, also for ids never subscribed.
    assert c.call("presence_unsubscribe", {"user_ids": [alice, "nobody"]}) == {"ok": True}


def test_unsubscribe_stops_the_events(clients):
    alice, bob = unique("alice"), unique("bob")
    support.make_conversation([alice, bob])
    b = clients(support.EDGE2, user=bob)
    subscribe(b, alice)
    a = clients(support.EDGE1, user=alice)
    wait_status(b, alice, "online")
    assert b.call("presence_unsubscribe", {"user_ids": [alice]}) == {"ok": True}
    a.call("presence_update", {"status": "busy"})
    time.sleep(1.5)
    assert statuses(b, alice) == ["online"]


BAD = [
    ("presence_subscribe", {}, "invalid_payload"),
    ("presence_subscribe", {"user_ids": "u1"}, "invalid_payload"),
    ("presence_subscribe", {"user_ids": [1, 2]}, "invalid_payload"),
    ("presence_subscribe", {"user_ids": [""]}, "invalid_payload"),
    ("presence_subscribe", {"user_ids": [f"u{i}" for i in range(501)]}, "invalid_payload"),
    ("presence_unsubscribe", {"user_ids": None}, "invalid_payload"),
    ("presence_unsubscribe", {"user_ids": [f"u{i}" for i in range(501)]}, "invalid_payload"),
    ("presence_update", {}, "invalid_payload"),
    ("presence_update", {"status": "offline"}, "invalid_payload"),
    ("presence_update", {"status": "sleeping"}, "invalid_payload"),
    ("presence_update", {"status": 3}, "invalid_payload"),
    ("presence_update", {"status": "busy", "message": 5}, "invalid_payload"),
    ("presence_update", {"status": "busy", "message": "x" * 257}, "invalid_payload"),
    ("presence_update", ["busy"], "invalid_payload"),
]


def test_bad_presence_input_is_refused_and_the_socket_stays_usable(clients, nodes):
    user = unique("u")
    c = clients(nodes[0], user=user)
    for event, payload, code in BAD:
        ack = c.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == code, (event, payload, ack)
        time.sleep(0.55 if event == "presence_update" else 0.03)  # presence_update: 2/s
    assert c.call("presence_subscribe", {"user_ids": [user]})["ok"] is True


def test_at_most_1000_subscriptions_per_socket(clients):
    me = unique("me")
    others = [unique("o") for _ in range(1001)]
    support.make_conversation([me, *others])
    c = clients(support.EDGE1, user=me)
    assert len(subscribe(c, *others[:500])["presences"]) == 500
    assert len(subscribe(c, *others[500:1000])["presences"]) == 500
    # Subscribing again to the same users is no new subscription.
    subscribe(c, *others[:10])
    ack = c.call("presence_subscribe", {"user_ids": [others[1000]]})
    assert ack["ok"] is False and ack["error"]["code"] == "conflict"
    c.call("presence_unsubscribe", {"user_ids": others[:1]})
    subscribe(c, others[1000])


def test_killed_node_users_go_offline_and_the_node_is_restarted(clients):
    r = redis.Redis.from_url(support.SETTINGS.redis_url)
    alice, bob = unique("alice"), unique("bob")
    support.make_conversation([alice, bob])
    b = clients(support.EDGE1, user=bob)
    subscribe(b, alice)
    clients(support.EDGE2, user=alice)   # her only socket, on the node killed below
    wait_status(b, alice, "online")
    pid = support.supervisor_pid("app:edge2")
    assert pid > 0
    killed_at = time.monotonic()
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_status(b, alice, "offline", timeout=NODE_TIMEOUT + 10)
    assert time.monotonic() - killed_at <= NODE_TIMEOUT + 10
    assert not connections.is_connected(r, alice)
    # The supervisor brings the node back under the same id, and it serves again.
    support.eventually(lambda: support.supervisor_pid("app:edge2") not in (0, pid)
                       and support.http_ok(f"{support.EDGE2}/readyz"), timeout=30, message="edge2 restarted")
    clients(support.EDGE2, user=alice)
    support.eventually(lambda: statuses(b, alice) == ["online", "offline", "online"], timeout=5,
                       message="alice online again on the restarted node")


def test_a_node_removes_registry_entries_of_its_sockets_gone():
    """An entry of edge1 with no socket behind it (its unregister failed) leaves the registry
    within one reconcile period, and its user counts as disconnected."""
    from edge.handlers.presence import RECONCILE_TICKS, SETTLE_TICK_S
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    user, sid = unique("ghost-user"), unique("ghost-sid")
    connections.save(r, connections.Connection(sid=sid, user_id=user, device_id="d", node_id="edge1",
                                               connected_at=time.time()))
    assert connections.is_connected(r, user)
    support.eventually(lambda: sid not in connections.of_node(r, "edge1"),
                       timeout=RECONCILE_TICKS * SETTLE_TICK_S + 5, message="ghost entry removed")
    assert not connections.is_connected(r, user)
    # The close is recorded by the node's next flush, after the entry has gone (as for any
    # disconnect: the registry first, presence within a tick).
    support.eventually(lambda: r.hget(keys.presence(user), "offline_since") is not None,
                       timeout=2, message="the close recorded")
