"""Which Redis channel carries a message between edge nodes and workers (fan-out routing).

python-socketio's Redis manager, like Node's `@socket.io/redis-adapter`, publishes
every emit on one channel that every node reads: a node decodes every emit of the
cluster, including those for rooms it has no member of (bench W3/W4: ~50 µs of a
node's CPU per emit it throws away).

With routing on (`FANOUT_ROUTING=rooms`, the default), an emit to one room named by
`realtime.keys` as a user's or a conversation's room goes on that room's own channel,
and an edge node reads the channel of each such room it has a member in (edge.fanout).
Redis does the routing: a node with no member of a room never hears of its emits.
Everything else (broadcasts, emits to a socket's sid or to several rooms, presence
rooms, the manager's own messages: disconnect, enter_room, callbacks) stays on the
base channel, which every node reads as before. So a stock `socketio.RedisManager`
publishing on the base channel still reaches every socket.

Publishers and nodes must agree: an edge node with routing off (or an older one)
reads only the base channel, so the whole cluster then needs `FANOUT_ROUTING=broadcast`.
Upgrade the edge nodes before the publishers.
"""
from __future__ import annotations

import logging
from typing import Any

import redis
import socketio

from . import keys

log = logging.getLogger(__name__)


def is_routed_room(room: Any) -> bool:
    """Whether emits to `room` travel on a channel of their own. Only rooms of
    many emits and few nodes each are worth a subscription: a user's room (its
    devices) and a conversation's room (its members online)."""
    return isinstance(room, str) and room.startswith(keys.ROUTED_ROOM_PREFIXES)


def room_channel(base: str, namespace: str, room: str) -> str:
    return f"{base}#{namespace}#{room}"


def channel_for(base: str, message: dict, *, routing: bool) -> str:
    """The channel that carries a manager `message` (python-socketio's dict)."""
    if routing and message.get("method") == "emit":
        room = message.get("room")
        if is_routed_room(room):
            return room_channel(base, message.get("namespace") or "/", room)
    return base


class RoutedRedisManager(socketio.RedisManager):
    """The write-only manager of workers and other publishers: python-socketio's,
    publishing each message on the channel `channel_for` picks."""

    def __init__(self, url: str, channel: str, *, routing: bool, **kwargs):
        super().__init__(url, channel=channel, write_only=True, **kwargs)
        self.routing = routing

    def _publish(self, data):
        channel = channel_for(self.channel, data, routing=self.routing)
        payload = self.json.dumps(data)
        for attempt in (1, 2):
            try:
                if not self.connected:
                    self._redis_connect()
                return self.redis.publish(channel, payload)
            except redis.RedisError as exc:
                log.error("publish to %s failed (attempt %d): %r", channel, attempt, exc)
                self.connected = False
        return None
