"""The cross-node connection registry the other features read (realtime.connections)."""
import redis

from realtime import connections
from tests import support
from tests.support import unique


def test_registry_follows_connect_join_leave_disconnect(clients):
    r = redis.Redis.from_url(support.SETTINGS.redis_url)
    user = unique("u")
    conv = support.make_conversation([user])
    a = clients(support.EDGE1, user=user, device_id="phone")
    b = clients(support.EDGE2, user=user, device_id="laptop")
    a.wait_for("authenticated"), b.wait_for("authenticated")
    conns = support.eventually(lambda: len(connections.of_user(r, user)) == 2 and connections.of_user(r, user))
    assert {(c.device_id, c.node_id) for c in conns} == {("phone", "edge1"), ("laptop", "edge2")}
    assert not connections.in_conversation(conns, conv)
    a.call("join_room", {"conversation_id": conv})
    assert connections.in_conversation(connections.of_user(r, user), conv)
    a.call("leave_room", {"conversation_id": conv})
    assert not connections.in_conversation(connections.of_user(r, user), conv)
    a.close()
    support.eventually(lambda: [c.device_id for c in connections.of_user(r, user)] == ["laptop"])
    b.close()
    support.eventually(lambda: not connections.is_connected(r, user))


def test_live_nodes_heartbeat_within_the_node_timeout():
    import time
    from realtime import keys
    r = redis.Redis.from_url(support.SETTINGS.redis_url)
    now = time.time()
    for node in ("edge1", "edge2"):
        beat = r.zscore(keys.NODES_HEARTBEAT, node)
        assert beat is not None and now - beat < support.SETTINGS.presence_node_timeout_s
    assert not {"edge1", "edge2"} & set(connections.silent_nodes(r, now, support.SETTINGS.presence_node_timeout_s))
