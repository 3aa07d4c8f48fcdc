"""edge.fanout.RoomIndexMixin: the per-socket room index agrees with python-socketio's rooms."""
import itertools
import random
from types import SimpleNamespace

import socketio

from edge.fanout import RoomIndexMixin


class IndexedManager(RoomIndexMixin, socketio.Manager):
    pass


def managers():
    """Two managers that give the same sids to the same connects."""
    pair = IndexedManager(), socketio.Manager()
    for m in pair:
        ids = itertools.count()
        m.server = SimpleNamespace(eio=SimpleNamespace(generate_id=lambda ids=ids: f"s{next(ids)}"))
    return pair


def snapshot(m) -> dict:
    return {ns: {room: dict(members) for room, members in rooms.items()} for ns, rooms in m.rooms.items()}


def test_random_room_changes_leave_both_managers_with_the_same_rooms():
    rng = random.Random(7)
    indexed, plain = managers()
    sids = []
    for step in range(3000):
        op = rng.random()
        if op < 0.25 or not sids:
            sid = indexed.connect(f"e{step}", "/")
            assert plain.connect(f"e{step}", "/") == sid
            sids.append(sid)
        elif op < 0.6:
            sid, room = rng.choice(sids), f"conv:{rng.randrange(20)}"
            for m in (indexed, plain):
                m.enter_room(sid, "/", room)
        elif op < 0.8:
            sid, room = rng.choice(sids), f"conv:{rng.randrange(20)}"
            for m in (indexed, plain):
                m.leave_room(sid, "/", room)
        elif op < 0.85:
            room = f"conv:{rng.randrange(20)}"
            for m in (indexed, plain):
                m.close_room(room, "/")
        else:
            sid = sids.pop(rng.randrange(len(sids)))
            assert sorted(indexed.get_rooms(sid, "/")) == sorted(plain.get_rooms(sid, "/"))
            for m in (indexed, plain):
                m.pre_disconnect(sid, "/")
                m.disconnect(sid, "/")
        assert snapshot(indexed) == snapshot(plain)
    for sid in sids:
        assert sorted(indexed.get_rooms(sid, "/")) == sorted(plain.get_rooms(sid, "/"))
        assert indexed.rooms_of["/"][sid] == {room for room, members in indexed.rooms["/"].items() if sid in members}
    assert set(indexed.rooms_of.get("/", {})) == set(sids)


def test_a_disconnect_clears_the_index_and_the_pending_lists():
    indexed, _ = managers()
    sid = indexed.connect("e1", "/")
    indexed.enter_room(sid, "/", "user:alice")
    indexed.pre_disconnect(sid, "/")
    indexed.disconnect(sid, "/")
    assert indexed.rooms == {} and indexed.rooms_of == {}
    assert indexed.pending_connect == {} and indexed.pending_disconnect == {}


def test_a_node_whose_subscription_is_killed_resubscribes_and_gets_cross_node_events_again(clients):
    """edge.fanout.LeanChannelListener against real Redis: CLIENT KILL of the node's
    fan-out connection (what a Redis restart or a network cut looks like to the node)."""
    import redis

    from tests import support
    from tests.support import unique

    node_id = unique("fanout")
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)

    def subscription_ids() -> list[int]:
        return [c["id"] for c in r.client_list() if c.get("name") == f"{node_id}:fanout" and c["sub"] == "1"]

    proc = support.start_edge(5041, node_id)
    try:
        alice, bob = unique("alice"), unique("bob")
        conv = support.make_conversation([alice, bob])
        a = clients(support.EDGE1, user=alice)
        b = clients("http://127.0.0.1:5041", user=bob)
        for c in (a, b):
            assert c.call("join_room", {"conversation_id": conv})["ok"]
        assert a.call("message_send", {"conversation_id": conv, "client_msg_id": "m1", "body": "one"})["ok"]
        assert b.wait_for("message_new")["message"]["body"] == "one"

        [first] = subscription_ids()
        r.execute_command("CLIENT", "KILL", "ID", first)
        support.eventually(lambda: subscription_ids() not in ([], [first]), timeout=10, message="resubscribed")
        assert support.http_ok("http://127.0.0.1:5041/readyz")
        assert a.call("message_send", {"conversation_id": conv, "client_msg_id": "m2", "body": "two"})["ok"]
        assert b.wait_for("message_new", lambda m: m["message"]["body"] == "two")["message"]["seq"] == 2
    finally:
        support.stop_process(proc)
