"""Cross-node fan-out through Redis pub/sub.

python-socketio's RedisManager shares one Redis client between publishing and
the subscription, and a single failed publish replaces both: the listener's
connection is closed under it and the node misses every emit until the listener
has reconnected (seen as lost cross-node messages after a burst of disconnects).
Here publishing has a client of its own, so a publish error never touches the
subscription.

With routing on (realtime.fanout, FANOUT_ROUTING=rooms) a node also reads the
channel of every user or conversation room it has a member in, and nothing of the
others (LeanChannelListener).
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

from realtime import fanout as routing

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

    Likewise the sockets between pre_disconnect and disconnect are kept in dicts
    (insertion-ordered sets) instead of python-socketio's lists: a disconnect waits
    for its registry write (edge.registry), so in a disconnect storm thousands are
    pending at once, and every `is_connected` scanned the list.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rooms_of: dict[str, dict[str, set]] = {}   # namespace -> sid -> rooms

    def pre_disconnect(self, sid, namespace):
        self.pending_disconnect.setdefault(namespace, {})[sid] = None
        return self.rooms[namespace][None].get(sid)

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
        connecting = self.pending_connect.get(namespace)   # python-socketio's list
        if connecting is not None and sid in connecting:
            connecting.remove(sid)
            if not connecting:
                del self.pending_connect[namespace]
        disconnecting = self.pending_disconnect.get(namespace)   # a dict (pre_disconnect)
        if disconnecting is not None and sid in disconnecting:
            del disconnecting[sid]
            if not disconnecting:
                del self.pending_disconnect[namespace]

    def get_rooms(self, sid, namespace):
        return [room for room in self.rooms_of.get(namespace, {}).get(sid, ()) if room is not None]


def _nothing_to_confirm() -> None:
    return None


class NodeRedisManager(RoomIndexMixin, socketio.RedisManager):
    # Whether emits to user/conversation rooms are published on their own channels
    # (set by make_manager; only with a listener that reads them).
    routing = False

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

    def enter_room_then_confirm(self, sid, namespace, room, eio_sid=None):
        """Enter `room` and return what waits until emits to it reach this node (here
        nothing: the one channel is always read; see LeanChannelListener)."""
        self.enter_room(sid, namespace, room, eio_sid=eio_sid)
        return _nothing_to_confirm

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
        channel = routing.channel_for(self.channel, data, routing=self.routing)
        for attempt in (1, 2):
            try:
                return self._publisher_client().publish(channel, payload)
            except redis.RedisError as exc:
                log.error("publish to %s failed (attempt %d): %r", channel, attempt, exc)
                if attempt == 1:
                    # Drop the pool: its connections may all be broken.
                    client, self._publisher = self._publisher, None
                    try:
                        client.close()
                    except Exception:
                        pass
        return None


class FanoutUnavailable(redis.ConnectionError):
    """A room's channel could not be subscribed in time: the node could not promise
    to deliver that room's emits, so entering it is refused (`unavailable`)."""


def complete_replies(reader: hiredis.Reader):
    """Each reply complete in `reader`, with whether it is the last one read so far."""
    reply = reader.gets()
    while reply is not False:
        following = reader.gets()
        yield reply, following is False
        reply = following


class LeanChannelListener:
    """The fan-out channels read with a plain socket and hiredis, many messages per read.

    redis-py's PubSub spent ~60 % of a node's time per message on its own layers (a
    retry wrapper, a readiness check and a parse per message, push-message handling;
    py-spy, bench W4 node with no member). Here one recv() takes whatever has arrived
    and hiredis splits it into messages.

    With `routing` on, the node also reads the channel of every routed room
    (realtime.fanout) it has a local member in: the first member's entry asks for
    the channel, the last member's exit drops it. One writer greenthread sends what
    changed as a batch (SUBSCRIBE …, UNSUBSCRIBE …, then PING <seq>); the PING's
    reply, which Redis sends after the subscriptions took effect, confirms them.
    `enter_room` returns only once its room's channel is confirmed, so an emit made
    after a socket joined (its ack, its CONNECT) is never published to a channel the
    node is not reading yet.

    Reconnects with backoff like python-socketio's listener, subscribing again to
    everything wanted, and says whether the subscriptions are confirmed (`listening`,
    for /readyz). TLS and unix-socket URLs keep redis-py's listener (and no routing).
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
    # Seconds a socket entering a room waits for the room's channel to be confirmed
    # before the entry is refused as `unavailable` (Redis unreachable).
    ROOM_SUBSCRIBE_TIMEOUT_S = 2.0
    # Channels per SUBSCRIBE/UNSUBSCRIBE command (a resubscription after a reconnect
    # can name every room of the node).
    CHANNELS_PER_COMMAND = 2000

    client_name: str | None = None
    # True while the message being delivered is the last one read so far: no other
    # message would share its frames' send(), so edge.fastpath writes them at once.
    read_drained = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wanted: set[str] = {self.channel}   # channels this node should read
        self._changed: set[str] = set(self._wanted)  # wanted or not since the last batch
        self._sent: dict[str, int] = {}            # channel -> seq of the batch that subscribed it
        self._sock: socket.socket | None = None    # the current subscription connection
        self._seq = 0                              # batches sent, over every connection
        self._acked = 0                            # highest batch Redis confirmed
        self._ready_seq: int | None = None         # the first batch of the current connection
        self._flush_due = None                     # events, made once the server is known
        self._waiters: list = []

    @functools.cached_property
    def _lean_options(self) -> dict | None:
        """Where to connect, or None for a URL this listener does not speak (TLS, unix)."""
        options = redis.connection.parse_url(self.redis_url)
        return None if "connection_class" in options else options

    @property
    def listening(self) -> bool:
        if self._lean_options is None:
            return super().listening
        return self._ready_seq is not None and self._acked >= self._ready_seq

    def initialize(self):
        self._flush_due = self.server.eio.create_event()
        super().initialize()
        if not self.write_only and self._lean_options is not None:
            self.server.start_background_task(self._write_subscriptions_forever)

    # --- which channels --------------------------------------------------------------
    def _routed_channel(self, namespace, room) -> str | None:
        """The room's own channel when its emits are routed (realtime.fanout), else None."""
        if self.routing and routing.is_routed_room(room):
            return routing.room_channel(self.channel, namespace, room)
        return None

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        channel = self._routed_channel(namespace, room)
        if channel is not None and channel not in self._wanted:
            self._wanted.add(channel)
            self._changed.add(channel)
            self._wake_writer()

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        channel = self._routed_channel(namespace, room)
        if channel in self._wanted and room not in self.rooms.get(namespace, {}):   # the last member left
            self._wanted.discard(channel)
            self._changed.add(channel)
            self._wake_writer()

    def enter_room(self, sid, namespace, room, eio_sid=None):
        """A local socket's entry returns once the room's channel is confirmed; if it is
        not within ROOM_SUBSCRIBE_TIMEOUT_S, the entry is undone and FanoutUnavailable
        raised. (python-socketio's own handling of a remote `enter_room` message calls
        the base manager's enter_room, never this: the listener never waits on itself.)"""
        self.enter_room_then_confirm(sid, namespace, room, eio_sid=eio_sid)()

    def enter_room_then_confirm(self, sid, namespace, room, eio_sid=None):
        """Enter `room` now; the callable returned waits for the room's channel, and on a
        timeout undoes the entry and raises FanoutUnavailable. A caller can overlap that
        round trip with its own (the connect's registry write)."""
        namespace = namespace or "/"
        members = self.rooms.get(namespace, {}).get(room)
        was_member = members is not None and sid in members
        super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        if (self._routed_channel(namespace, room) is None or was_member
                or sid not in self.rooms.get(namespace, {}).get(room, ())):   # not a socket of this node
            return _nothing_to_confirm

        def confirm() -> None:
            if not self.wait_room_channel(namespace, room, self.ROOM_SUBSCRIBE_TIMEOUT_S):
                self.basic_leave_room(sid, namespace, room)
                raise FanoutUnavailable(f"could not subscribe to the channel of {room}")
        return confirm

    def wait_room_channel(self, namespace: str, room: str, timeout: float) -> bool:
        """Whether the room's channel is confirmed (or no longer wanted) within `timeout`."""
        channel = routing.room_channel(self.channel, namespace, room)
        deadline = time.monotonic() + timeout
        while True:
            if channel not in self._wanted:
                return True
            seq = self._sent.get(channel)
            if seq is not None and seq <= self._acked:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._flush_due is None:
                return False
            event = self.server.eio.create_event()
            self._waiters.append(event)
            try:
                event.wait(remaining)
            finally:
                self._waiters.remove(event)

    # --- the writer -------------------------------------------------------------------
    def _wake_writer(self) -> None:
        if self._flush_due is not None:
            self._flush_due.set()

    def _write_subscriptions_forever(self) -> None:
        while True:
            self._flush_due.wait()
            self._flush_due.clear()
            try:
                self._write_subscriptions()
            except OSError as exc:
                # The listener sees the broken connection too, reconnects and wakes us.
                log.warning("fan-out subscription update failed: %r", exc)
            except Exception:  # pragma: no cover - never let the writer die
                log.exception("fan-out subscription update failed")

    def _write_subscriptions(self) -> None:
        sock = self._sock
        if sock is None:
            return
        # Only what changed since the last batch: a node can read tens of thousands of
        # rooms, and a connect storm makes a batch every few connects.
        changed, self._changed = self._changed, set()
        wanted, sent = self._wanted, self._sent
        subscribe = [c for c in changed if c in wanted and c not in sent]
        unsubscribe = [c for c in changed if c not in wanted and c in sent]
        if not subscribe and not unsubscribe:
            return
        self._seq += 1
        seq = self._seq
        commands = []
        step = self.CHANNELS_PER_COMMAND
        for verb, channels in (("SUBSCRIBE", subscribe), ("UNSUBSCRIBE", unsubscribe)):
            for i in range(0, len(channels), step):
                commands.append(hiredis.pack_command((verb, *channels[i:i + step])))
        commands.append(hiredis.pack_command(("PING", str(seq))))
        # Marked before the send, which may switch greenthreads: what changes meanwhile
        # goes in the next batch (the writer is woken again).
        for channel in subscribe:
            self._sent[channel] = seq
        for channel in unsubscribe:
            del self._sent[channel]
        if self._ready_seq is None:
            self._ready_seq = seq
        sock.sendall(b"".join(commands))

    def _confirmed(self, seq: int) -> None:
        if seq > self._acked:
            self._acked = seq
            for event in list(self._waiters):
                event.set()

    # --- the reader -------------------------------------------------------------------
    def _listen(self):
        options = self._lean_options
        if options is None:
            yield from super()._listen()
            return
        retry_s = self.LISTEN_RETRY_FIRST_S
        while True:
            sock = None
            try:
                sock = self._connect(options)
                reader = hiredis.Reader()
                # A new connection reads nothing yet: everything wanted is sent again.
                self._sent = {}
                self._changed = set(self._wanted)
                self._ready_seq = None
                self._sock = sock
                self._wake_writer()
                while True:
                    data = sock.recv(self.READ_SIZE)
                    if not data:
                        raise ConnectionError("Redis closed the subscription")
                    reader.feed(data)
                    for reply, last in complete_replies(reader):
                        if isinstance(reply, hiredis.ReplyError):
                            raise ConnectionError(f"Redis refused: {reply}")
                        kind = reply[0]
                        if kind == b"message":
                            self.read_drained = last
                            try:
                                yield reply[2]
                            finally:
                                self.read_drained = False
                        elif kind == b"pong":
                            self._confirmed(int(reply[1]))
                            retry_s = self.LISTEN_RETRY_FIRST_S
            except Exception as exc:  # OSError, ConnectionError, a bad reply
                self._sock = None
                self._ready_seq = None
                log.error("fan-out subscription to %s lost (%r); again in %.1fs", self.channel, exc, retry_s)
                time.sleep(retry_s)    # green under eventlet/gevent
                retry_s = min(retry_s * 2, self.LISTEN_RETRY_MAX_S)
            finally:
                if sock is not None:
                    sock.close()

    def _connect(self, options: dict) -> socket.socket:
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
        if commands:
            sock.sendall(b"".join(hiredis.pack_command(tuple(c)) for c in commands))
            reader = hiredis.Reader()
            for _ in commands:   # their replies come before anything subscribed
                while (reply := reader.gets()) is False:
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("Redis closed the connection")
                    reader.feed(data)
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis refused: {reply}")
        sock.settimeout(None)   # a subscription waits as long as nothing is published
        return sock


def make_manager(url: str, channel: str, *, fast_broadcast: bool, rooms_routing: bool = False,
                 node_id: str = "", **kwargs) -> NodeRedisManager:
    """The node's client manager.

    With `fast_broadcast` its local deliveries go through edge.fastpath (one frame per
    broadcast, direct non-blocking writes). With `rooms_routing` (FANOUT_ROUTING=rooms)
    it publishes emits to user/conversation rooms on their own channels and reads only
    those of its rooms. Either one reads with LeanChannelListener.
    """
    bases: tuple = (NodeRedisManager,)
    if fast_broadcast or rooms_routing:
        bases = (LeanChannelListener, *bases)
    if fast_broadcast:
        from .fastpath import FastEmitMixin
        bases = (FastEmitMixin, *bases)
    if len(bases) == 1:
        return NodeRedisManager(url, channel=channel, **kwargs)
    manager_class = type("EdgeRedisManager", bases, {})
    manager = manager_class(url, channel=channel, **kwargs)
    if rooms_routing and manager._lean_options is None:
        raise ValueError(f"FANOUT_ROUTING=rooms needs a redis:// URL (got {url.split(':', 1)[0]}://); "
                         "set FANOUT_ROUTING=broadcast")
    manager.routing = rooms_routing
    manager.client_name = f"{node_id}:fanout" if node_id else None
    return manager
