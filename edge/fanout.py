"""Cross-node fan-out through Redis pub/sub.

python-socketio's RedisManager shares one Redis client between publishing and
the subscription, and a single failed publish replaces both: the listener's
connection is closed under it and the node misses every emit until the listener
has reconnected (seen as lost cross-node messages after a burst of disconnects).
Here publishing has a client of its own, so a publish error never touches the
subscription.
"""
from __future__ import annotations

import functools
import logging
import socket
import time

import hiredis
import redis
import redis.connection
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


class LeanChannelListener:
    """The fan-out channel read with a plain socket and hiredis, many messages per read.

    Every node receives every emit published by any node or worker, including the
    ones it has no recipient for. redis-py's PubSub spends ~60 % of such a node's
    time per message on its own layers (a retry wrapper, a readiness check and a
    parse per message, push-message handling; py-spy, bench W4 node with no member).
    Here one recv() takes whatever has arrived and hiredis splits it into messages.

    Reconnects with backoff like python-socketio's listener, and says whether the
    subscription is confirmed (`listening`, for /readyz). TLS and unix-socket URLs
    keep redis-py's listener.
    """
    # Seconds: connecting, and the first retry after a failure (doubling up to the max).
    LISTEN_CONNECT_TIMEOUT_S = 5.0
    LISTEN_RETRY_FIRST_S = 0.5
    LISTEN_RETRY_MAX_S = 30.0
    # Dead-peer detection on an otherwise silent subscription (TCP keepalive).
    LISTEN_KEEPALIVE_IDLE_S = 30
    LISTEN_KEEPALIVE_INTERVAL_S = 10
    LISTEN_KEEPALIVE_COUNT = 3
    READ_SIZE = 256 * 1024

    _confirmed = False
    client_name: str | None = None

    @functools.cached_property
    def _lean_options(self) -> dict | None:
        """Where to connect, or None for a URL this listener does not speak (TLS, unix)."""
        options = redis.connection.parse_url(self.redis_url)
        return None if "connection_class" in options else options

    @property
    def listening(self) -> bool:
        if self._lean_options is None:
            return super().listening
        return self._confirmed

    def _listen(self):
        options = self._lean_options
        if options is None:
            yield from super()._listen()
            return
        channel = self.channel.encode()
        retry_s = self.LISTEN_RETRY_FIRST_S
        while True:
            sock = None
            try:
                sock = self._subscribe(options)
                reader = hiredis.Reader()
                while True:
                    data = sock.recv(self.READ_SIZE)
                    if not data:
                        raise ConnectionError("Redis closed the subscription")
                    reader.feed(data)
                    while (reply := reader.gets()) is not False:
                        if isinstance(reply, hiredis.ReplyError):
                            raise ConnectionError(f"Redis refused: {reply}")
                        kind = reply[0]
                        if kind == b"message" and reply[1] == channel:
                            yield reply[2]
                        elif kind == b"subscribe":
                            self._confirmed = True
                            retry_s = self.LISTEN_RETRY_FIRST_S
            except Exception as exc:  # OSError, ConnectionError, a bad reply
                self._confirmed = False
                log.error("fan-out subscription to %s lost (%r); again in %.1fs", self.channel, exc, retry_s)
                time.sleep(retry_s)    # green under eventlet/gevent
                retry_s = min(retry_s * 2, self.LISTEN_RETRY_MAX_S)
            finally:
                if sock is not None:
                    sock.close()

    def _subscribe(self, options: dict) -> socket.socket:
        sock = socket.create_connection((options.get("host", "localhost"), options.get("port", 6379)),
                                        timeout=self.LISTEN_CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", self.LISTEN_KEEPALIVE_IDLE_S),
                            ("TCP_KEEPINTVL", self.LISTEN_KEEPALIVE_INTERVAL_S),
                            ("TCP_KEEPCNT", self.LISTEN_KEEPALIVE_COUNT)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        commands = []
        if options.get("password") is not None:
            auth = [options["username"], options["password"]] if options.get("username") else [options["password"]]
            commands.append(["AUTH", *auth])
        if self.client_name:
            commands.append(["CLIENT", "SETNAME", self.client_name])   # who it is in CLIENT LIST
        commands.append(["SUBSCRIBE", self.channel])
        sock.sendall(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
        sock.settimeout(None)   # a subscription waits as long as nothing is published
        return sock


def make_manager(url: str, channel: str, *, fast_broadcast: bool, node_id: str = "",
                 **kwargs) -> NodeRedisManager:
    """The node's client manager; with `fast_broadcast` its local deliveries go
    through edge.fastpath (one frame per broadcast, direct non-blocking writes) and
    it listens with LeanChannelListener."""
    if not fast_broadcast:
        return NodeRedisManager(url, channel=channel, **kwargs)
    from .fastpath import FastEmitMixin

    class FastNodeRedisManager(FastEmitMixin, LeanChannelListener, NodeRedisManager):
        pass

    manager = FastNodeRedisManager(url, channel=channel, **kwargs)
    manager.client_name = f"{node_id}:fanout" if node_id else None
    return manager
