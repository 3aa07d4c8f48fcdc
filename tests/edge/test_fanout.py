"""edge.fanout: the per-socket room index agrees with python-socketio's rooms; the
fan-out listener survives a killed connection and reads only the channels of the rooms
its node has members in (FANOUT_ROUTING=rooms)."""
import itertools
import random
from types import SimpleNamespace

import hiredis
import pytest
import socketio

from edge.fanout import FanoutUnavailable, RoomIndexMixin, complete_replies, make_manager


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


def test_sockets_pending_disconnect_are_not_connected_until_they_leave():
    indexed, plain = managers()
    sids = [indexed.connect(f"e{i}", "/") for i in range(6)]
    assert [plain.connect(f"e{i}", "/") for i in range(6)] == sids
    for m in (indexed, plain):
        for sid in sids[:4]:
            m.pre_disconnect(sid, "/")
        m.disconnect(sids[1], "/")
        assert [m.is_connected(sid, "/") for sid in sids] == [False] * 4 + [True] * 2
        for sid in (sids[0], sids[2], sids[3]):
            m.disconnect(sid, "/")
        assert m.pending_disconnect == {} and [m.is_connected(sid, "/") for sid in sids] == [False] * 4 + [True] * 2
    assert snapshot(indexed) == snapshot(plain)


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
        return [c["id"] for c in r.client_list() if c.get("name") == f"{node_id}:fanout" and int(c["sub"]) >= 1]

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


# ------------------------------------------------------------------ routing per room
def routed_manager():
    manager = make_manager("redis://127.0.0.1:1/0", "routing-test", fast_broadcast=False, rooms_routing=True)
    ids = itertools.count()
    manager.server = SimpleNamespace(eio=SimpleNamespace(generate_id=lambda: f"s{next(ids)}"))
    return manager


def test_a_room_whose_channel_cannot_be_subscribed_is_not_entered():
    """No listener (as with Redis unreachable): the entry is refused and undone."""
    manager = routed_manager()
    sid = manager.connect("e1", "/")
    with pytest.raises(FanoutUnavailable):
        manager.enter_room(sid, "/", "conv:c1")
    assert "conv:c1" not in manager.rooms["/"]
    assert manager.get_rooms(sid, "/") == [sid]
    assert manager._wanted == {"routing-test"}


def test_rooms_without_a_channel_of_their_own_are_entered_without_waiting():
    manager = routed_manager()
    sid = manager.connect("e1", "/")
    manager.enter_room(sid, "/", "presence:bob")      # read from the base channel
    assert sid in manager.rooms["/"]["presence:bob"]
    assert manager._wanted == {"routing-test"}


def test_the_last_member_leaving_drops_the_channel_and_only_the_last():
    manager = routed_manager()
    a, b = manager.connect("e1", "/"), manager.connect("e2", "/")
    for sid in (a, b):
        manager.basic_enter_room(sid, "/", "user:alice")
    channel = "routing-test#/#user:alice"
    assert channel in manager._wanted
    manager.basic_leave_room(a, "/", "user:alice")
    assert channel in manager._wanted
    manager.basic_disconnect(b, "/")              # what a socket's disconnect does locally
    assert channel not in manager._wanted


def test_a_node_reads_the_channels_of_its_members_rooms_and_no_other(clients):
    """Against real Redis: `PUBSUB NUMSUB` counts the connections reading a channel.
    The counts are read right after the CONNECT and the join_room ack, without
    waiting: the node confirms a room's channel before it answers."""
    import redis

    from realtime import keys
    from realtime.fanout import room_channel
    from tests import support
    from tests.support import unique

    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    base = support.SETTINGS.socketio_channel
    node_id = unique("routing")

    def readers(room: str) -> int:
        return r.pubsub_numsub(room_channel(base, "/", room))[0][1]

    def fanout_subscriptions() -> int:
        [conn] = [c for c in r.client_list() if c.get("name") == f"{node_id}:fanout"]
        return int(conn["sub"])

    proc = support.start_edge(5042, node_id)
    url = "http://127.0.0.1:5042"
    try:
        assert fanout_subscriptions() == 1          # the base channel only
        alice, bob = unique("alice"), unique("bob")
        conv = support.make_conversation([alice, bob])
        phone = clients(url, user=alice, device_id="phone")
        assert readers(keys.user_room(alice)) == 1
        assert phone.call("join_room", {"conversation_id": conv})["ok"]
        assert readers(keys.conversation_room(conv)) == 1
        assert fanout_subscriptions() == 3

        # bob is on a stack node: his room is read there, not here, and an emit to it
        # from a worker's manager reaches him through that channel alone.
        bob_client = clients(support.EDGE2, user=bob)
        assert readers(keys.user_room(bob)) == 1 and fanout_subscriptions() == 3
        from realtime.fanout import RoutedRedisManager
        emitter = RoutedRedisManager(support.SETTINGS.redis_url, base, routing=True)
        emitter.emit("notification", {"probe": conv}, room=keys.user_room(bob), namespace="/")
        assert bob_client.wait_for("notification", lambda n: n.get("probe") == conv)

        laptop = clients(url, user=alice, device_id="laptop")
        assert laptop.call("join_room", {"conversation_id": conv})["ok"]
        assert fanout_subscriptions() == 3          # rooms already read
        phone.close()
        assert laptop.call("leave_room", {"conversation_id": conv})["ok"]
        support.eventually(lambda: readers(keys.conversation_room(conv)) == 0, message="conversation channel dropped")
        assert readers(keys.user_room(alice)) == 1  # the laptop is still here
        laptop.close()
        support.eventually(lambda: readers(keys.user_room(alice)) == 0, message="user channel dropped")
        assert fanout_subscriptions() == 1
    finally:
        support.stop_process(proc)


class SlowSubscriptionProxy:
    """A TCP proxy to Redis that holds back, by `delay_s`, every command the edge's
    fan-out connection (named `<node>:fanout` in its first packet) sends after that
    first packet: subscriptions take effect late, everything else passes through."""

    def __init__(self, redis_url: str, delay_s: float):
        import socket
        import threading
        from urllib.parse import urlparse

        parsed = urlparse(redis_url)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.delay_s = delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socket, self.threading = socket, threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = self.socket.create_connection(self.target)
            self.threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            self.threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, sink, from_edge: bool):
        import time
        slow = False
        first = True
        try:
            while data := source.recv(65536):
                if from_edge and slow:
                    time.sleep(self.delay_s)
                sink.sendall(data)
                if from_edge and first:
                    slow, first = b"fanout" in data, False
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(self.socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_a_socket_is_answered_only_once_its_rooms_channel_is_read(clients):
    """With subscriptions held back 0.3 s, the CONNECT and the join_room ack still come
    only after the node reads the room's channel: an emit made right after them arrives."""
    import redis

    from realtime import keys
    from realtime.fanout import RoutedRedisManager, room_channel
    from tests import support
    from tests.support import unique

    base = support.SETTINGS.socketio_channel
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    proxy = SlowSubscriptionProxy(support.SETTINGS.redis_url, 0.3)
    proc = support.start_edge(5043, unique("slowsub"), {"REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"})
    try:
        alice, bob = unique("alice"), unique("bob")
        conv = support.make_conversation([alice, bob])
        emitter = RoutedRedisManager(support.SETTINGS.redis_url, base, routing=True)
        a = clients("http://127.0.0.1:5043", user=alice)
        assert r.pubsub_numsub(room_channel(base, "/", keys.user_room(alice)))[0][1] == 1
        emitter.emit("notification", {"probe": "after-connect"}, room=keys.user_room(alice), namespace="/")
        assert a.call("join_room", {"conversation_id": conv}, timeout=5)["ok"]
        emitter.emit("message_new", {"probe": "after-join"}, room=keys.conversation_room(conv), namespace="/")
        assert a.wait_for("notification", lambda n: n.get("probe") == "after-connect")
        assert a.wait_for("message_new", lambda m: m.get("probe") == "after-join")
    finally:
        support.stop_process(proc)
        proxy.close()


def test_routing_needs_a_listener_that_reads_room_channels():
    with pytest.raises(ValueError, match="FANOUT_ROUTING=broadcast"):
        make_manager("rediss://127.0.0.1:6380/0", "c", fast_broadcast=True, rooms_routing=True)
    assert make_manager("rediss://127.0.0.1:6380/0", "c", fast_broadcast=True, rooms_routing=False).routing is False


def test_a_cluster_with_routing_off_fans_out_on_the_base_channel_alone(clients):
    """FANOUT_ROUTING=broadcast with the stock delivery path (the benchmark's edge-stock):
    the node reads its base channel only, and a publisher with routing off reaches it."""
    import redis

    from realtime import keys
    from realtime.fanout import RoutedRedisManager, room_channel
    from tests import support
    from tests.support import unique

    channel = unique("broadcast-channel")
    r = redis.Redis.from_url(support.SETTINGS.redis_url)
    proc = support.start_edge(5044, unique("stock"), {"FANOUT_ROUTING": "broadcast", "EDGE_FAST_BROADCAST": "off",
                                                      "EDGE_SOCKETIO_CHANNEL": channel})
    try:
        alice = unique("alice")
        a = clients("http://127.0.0.1:5044", user=alice)
        assert r.pubsub_numsub(room_channel(channel, "/", keys.user_room(alice)))[0][1] == 0
        assert r.pubsub_numsub(channel)[0][1] == 1
        RoutedRedisManager(support.SETTINGS.redis_url, channel, routing=False).emit(
            "notification", {"probe": 1}, room=keys.user_room(alice), namespace="/")
        assert a.wait_for("notification", lambda n: n.get("probe") == 1)
    finally:
        support.stop_process(proc)


def test_complete_replies_flags_the_last_reply_read_so_far():
    """The listener writes a message's frames at once only when no message read with it
    follows (edge.fastpath); a reply cut in two by the read is not complete yet."""
    reader = hiredis.Reader()
    reader.feed(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\na\r\n"
                b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nb\r\n"
                b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\n")
    assert [(reply[2], last) for reply, last in complete_replies(reader)] == [(b"a", False), (b"b", True)]
    reader.feed(b"c\r\n")
    assert [(reply[2], last) for reply, last in complete_replies(reader)] == [(b"c", True)]
    assert list(complete_replies(reader)) == []
