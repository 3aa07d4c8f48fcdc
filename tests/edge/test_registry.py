"""Group commit of the connection registry (edge/registry.py), against the stack's real
Redis, driven by OS threads (the edge drives it with greenthreads)."""
import threading

import pytest
import redis

from edge.registry import RegistryWriter
from realtime import connections, redis_client
from tests import support
from tests.support import unique


def writer_for(r) -> RegistryWriter:
    return RegistryWriter(r, spawn=lambda fn: threading.Thread(target=fn, daemon=True).start(),
                          make_event=threading.Event)


def conn(user: str, sid: str, node: str) -> connections.Connection:
    return connections.Connection(sid=sid, user_id=user, device_id=sid, node_id=node, connected_at=0.0,
                                  conversations=[])


def test_concurrent_saves_share_pipelines_and_all_land():
    r = redis_client.make_redis(support.SETTINGS)
    writer = writer_for(r)
    batches = []
    writer.apply = lambda client, writes: (batches.append(len(writes)), connections.apply(client, writes))
    node, users = unique("node"), [unique("u") for _ in range(60)]
    start = threading.Barrier(len(users))

    def save(user):
        start.wait()
        writer.save(conn(user, f"{user}.s", node))

    threads = [threading.Thread(target=save, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(connections.is_connected(r, u) for u in users)
    assert set(connections.of_node(r, node)) == {f"{u}.s" for u in users}
    assert sum(batches) == len(users) and len(batches) < len(users)  # grouped, not one command each
    for u in users:
        writer.remove(f"{u}.s", u, node)
    assert not any(connections.is_connected(r, u) for u in users)


def test_a_batch_applies_its_writes_in_order():
    r = redis_client.make_redis(support.SETTINGS)
    node, user = unique("node"), unique("u")
    connections.apply(r, [conn(user, "s1", node), conn(user, "s2", node), ("s1", user, node),
                          conn(user, "s3", node), ("s3", user, node), conn(user, "s3", node)])
    assert sorted(c.sid for c in connections.of_user(r, user)) == ["s2", "s3"]
    assert connections.of_node(r, node) == {"s2": user, "s3": user}
    assert {c.sid: c for c in connections.of_user(r, user)}["s2"] == conn(user, "s2", node)   # stored whole
    connections.apply(r, [("s2", user, node), ("s3", user, node)])
    assert connections.of_user(r, user) == [] and connections.of_node(r, node) == {}


def test_save_then_remove_of_one_socket_apply_in_order():
    r = redis_client.make_redis(support.SETTINGS)
    writer = writer_for(r)
    node, user = unique("node"), unique("u")
    writer.save(conn(user, "s1", node))
    writer.remove("s1", user, node)
    writer.save(conn(user, "s2", node))
    assert [c.sid for c in connections.of_user(r, user)] == ["s2"]


def test_redis_down_reaches_every_caller_and_nothing_hangs():
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    writer = writer_for(down)
    errors = []

    def save(i):
        try:
            writer.save(conn(f"u{i}", f"s{i}", "n"))
        except redis.RedisError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 10
    with pytest.raises(redis.RedisError):  # and the writer still works afterwards
        writer.remove("s0", "u0", "n")


def test_writes_given_a_pipeline_are_only_queued_until_it_runs():
    """The batches above hold one pipeline's worth of writes: a write handed a pipeline
    must queue in it, not run a round trip of its own (a Pipeline is also a Redis)."""
    r = redis_client.make_redis(support.SETTINGS)
    node, user, sid = unique("node"), unique("u"), unique("sid")
    pipe = r.pipeline(transaction=False)
    connections.save(pipe, conn(user, sid, node))
    assert len(pipe) == 2 and connections.of_user(r, user) == []
    pipe.execute()
    assert [c.sid for c in connections.of_user(r, user)] == [sid]
    connections.remove(pipe, sid, user, node)
    assert len(pipe) == 2 and connections.of_node(r, node) == {sid: user}
    pipe.execute()
    assert connections.of_user(r, user) == [] and connections.of_node(r, node) == {}
