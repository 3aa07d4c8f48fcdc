"""Fast broadcast path for the edge (EDGE_FAST_BROADCAST; eventlet only).

Server-to-client WebSocket frames are not masked, so every recipient of one
broadcast gets the very same bytes. Stock python-socketio/python-engineio encode
the Socket.IO packet once but then, per recipient, queue the Engine.IO packet,
wake that socket's writer greenthread, frame it in pure Python and `sendall` it.
Here the frame is built once and handed to each recipient's WebSocketConnection
(edge.wsconn), which writes it with one non-blocking `send()`, or keeps it in
order behind what that client has not read yet.

A recipient that is not on a websocket of its own (polling, mid-upgrade,
closing) gets the stock per-socket path, as do packets with binary attachments
or an ack callback (per-recipient packets).
"""
from __future__ import annotations

import collections
import logging
import time

from engineio import packet as eio_packet
from engineio import socket as engineio_socket
from socketio import packet as sio_packet

from .wsconn import text_frame

log = logging.getLogger(__name__)


# --------------------------------------------------------------------- pings
class PingWheel:
    """One greenthread for the whole node sends the Engine.IO PINGs, instead of one
    sleeping greenthread per socket (python-engineio's `_send_ping`): each greenthread
    costs its own frame stack, a noticeable part of the memory per connection. Every
    socket waits the same ping_interval, so due times come in schedule order and a deque
    serves them in O(1)."""

    TICK_S = 0.25

    def __init__(self, server):
        self.server = server
        self.queue: collections.deque = collections.deque()
        self.task = None

    def schedule(self, eio_socket) -> None:
        self.queue.append((time.monotonic() + self.server.ping_interval, eio_socket))
        if self.task is None:
            self.task = self.server.start_background_task(self._run)

    def _run(self) -> None:
        while True:
            self.server.sleep(self.TICK_S)
            try:
                self.tick(time.monotonic())
            except Exception:  # pragma: no cover - never let the loop die
                log.exception("ping wheel tick failed")

    def tick(self, now: float) -> None:
        q = self.queue
        while q and q[0][0] <= now:
            _, s = q.popleft()
            if not s.closing and not s.closed:
                s.last_ping = time.time()
                s.send(eio_packet.Packet(eio_packet.PING))


def _schedule_ping(self):
    wheel = getattr(self.server, "_ping_wheel", None)
    if wheel is None:
        return _stock_schedule_ping(self)
    # same contract as python-engineio's: only after the previous ping was answered
    if self.last_ping:
        self.last_ping = None
        wheel.schedule(self)


_stock_schedule_ping = engineio_socket.Socket.schedule_ping


def install_ping_wheel(eio_server) -> None:
    eio_server._ping_wheel = PingWheel(eio_server)
    if engineio_socket.Socket.schedule_ping is not _schedule_ping:
        engineio_socket.Socket.schedule_ping = _schedule_ping


# --------------------------------------------------------------------- manager side
class FastEmitMixin:
    """For a PubSubManager subclass: local delivery of callback-less, text emits
    (whether they come from this node or from the pub/sub channel) goes through
    `fast_emit`."""

    fast_broadcast = True
    # counters, for the benchmark and for operators
    fast_writes = 0
    fast_fallbacks = 0

    def _handle_emit(self, message):
        if (not self.fast_broadcast or message.get("binary")
                or message.get("callback") is not None):
            return super()._handle_emit(message)
        data = message["data"]
        if isinstance(data, list):
            if len(data) == 1:
                data = data[0]
            else:
                data = tuple(data)
        return self.fast_emit(message["event"], data, message.get("namespace") or "/",
                              message.get("room"), message.get("skip_sid"))

    def fast_emit(self, event, data, namespace, room, skip_sid):
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event] + data)
        encoded = pkt.encode()
        if isinstance(encoded, list):  # binary attachments: stock path
            return super().emit(event, data[0] if len(data) == 1 else tuple(data),
                                namespace=namespace, room=room, skip_sid=skip_sid,
                                ignore_queue=True)
        eio_pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame = None
        if not isinstance(skip_sid, list):
            skip_sid = [skip_sid]
        sockets = self.server.eio.sockets
        # The last message the listener has read: its frames need not wait for others
        # to share a send() with (edge.wsconn.WebSocketConnection.write).
        at_once = self.read_drained
        writes = fallbacks = 0
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip_sid:
                continue
            s = sockets.get(eio_sid)
            if s is None:
                continue
            conn = s.__dict__.get("_conn")
            if conn is None or not s.upgraded or s.closing or s.closed:
                fallbacks += 1
                s.send(eio_pkt)
                continue
            if frame is None:
                frame = text_frame(eio_pkt.encode())
            conn.write(frame, at_once=at_once)
            writes += 1
        self.fast_writes += writes
        self.fast_fallbacks += fallbacks


__all__ = ["FastEmitMixin", "install_ping_wheel", "PingWheel", "text_frame"]
