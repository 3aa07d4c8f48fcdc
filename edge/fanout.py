"""Cross-node fan-out through Redis pub/sub.

python-socketio's RedisManager shares one Redis client between publishing and
the subscription, and a single failed publish replaces both: the listener's
connection is closed under it and the node misses every emit until the listener
has reconnected (seen as lost cross-node messages after a burst of disconnects).
Here publishing has a client of its own, so a publish error never touches the
subscription.
"""
from __future__ import annotations

import logging

import redis
import socketio

log = logging.getLogger(__name__)

# Seconds; a publish that Redis does not accept within these fails (and is retried once).
PUBLISH_TIMEOUT_S = 3.0
PUBLISHER_MAX_CONNECTIONS = 256


class RoomIndexMixin:
    """The rooms of each socket, so that a disconnect costs that socket's rooms.

    python-socketio finds a leaving socket's rooms by copying the namespace's room
    table and testing every room for the sid (`basic_disconnect`, `get_rooms`). On
    an edge every socket has at least two rooms of its own (its sid, its `user:`
    room), so that is O(sockets) per disconnect and O(sockets²) when a node's
    sockets leave together: 8.5 % of a node's CPU over a 10,000-connection bench
    run, growing with the square of the node's size. The index follows every
    change of the room table, which python-socketio only makes through
    basic_enter_room / basic_leave_room.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rooms_of: dict[str, dict[str, set]] = {}   # namespace -> sid -> rooms

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self.rooms_of.setdefault(namespace, {}).setdefault(sid, set()).add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        of_namespace = self.rooms_of.get(namespace)
        rooms = of_namespace.get(sid) if of_namespace is not None else None
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del of_namespace[sid]
                if not of_namespace:
                    del self.rooms_of[namespace]

    def basic_disconnect(self, sid, namespace, **kwargs):
        for room in list(self.rooms_of.get(namespace, {}).get(sid, ())):
            self.basic_leave_room(sid, namespace, room)
        # What python-socketio's own basic_disconnect does after leaving the rooms.
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):
        return [room for room in self.rooms_of.get(namespace, {}).get(sid, ()) if room is not None]


class NodeRedisManager(RoomIndexMixin, socketio.RedisManager):
    def __init__(self, url: str, channel: str, **kwargs):
        super().__init__(url, channel=channel, **kwargs)
        self._publisher: redis.Redis | None = None

    def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        room = to or room
        # A socket's own room (its sid) lives on one node. When that node is this one,
        # deliver here: a publish would cost a Redis round trip, and every other node
        # would decode it for nothing (e.g. `authenticated` after each connect).
        if (not kwargs.get("ignore_queue") and isinstance(room, str)
                and room in self.rooms.get(namespace or "/", {}).get(None, ())):
            kwargs["ignore_queue"] = True
        return super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                            callback=callback, **kwargs)

    @property
    def listening(self) -> bool:
        """Whether this node has subscribed to the fan-out channel."""
        pubsub = getattr(self, "pubsub", None)
        return pubsub is not None and pubsub.subscribed

    def _publisher_client(self) -> redis.Redis:
        if self._publisher is None:
            # A blocking pool: in a connect storm hundreds of greenthreads publish at
            # once, and redis-py's plain pool refuses the 101st (MaxConnectionsError),
            # whose retry below then closed connections other greenthreads were using.
            self._publisher = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
                self.redis_url, max_connections=PUBLISHER_MAX_CONNECTIONS, timeout=PUBLISH_TIMEOUT_S,
                socket_connect_timeout=PUBLISH_TIMEOUT_S, socket_timeout=PUBLISH_TIMEOUT_S))
        return self._publisher

    def _publish(self, data):
        payload = self.json.dumps(data)
        for attempt in (1, 2):
            try:
                return self._publisher_client().publish(self.channel, payload)
            except redis.RedisError as exc:
                log.error("publish to %s failed (attempt %d): %r", self.channel, attempt, exc)
                if attempt == 1:
                    # Drop the pool: its connections may all be broken.
                    client, self._publisher = self._publisher, None
                    try:
                        client.close()
                    except Exception:
                        pass
        return None


def make_manager(url: str, channel: str, *, fast_broadcast: bool, **kwargs) -> NodeRedisManager:
    """The node's client manager; with `fast_broadcast` its local deliveries go
    through edge.fastpath (one frame per broadcast, direct non-blocking writes)."""
    if not fast_broadcast:
        return NodeRedisManager(url, channel=channel, **kwargs)
    from .fastpath import FastEmitMixin

    class FastNodeRedisManager(FastEmitMixin, NodeRedisManager):
        pass

    return FastNodeRedisManager(url, channel=channel, **kwargs)
