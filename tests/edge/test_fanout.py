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
