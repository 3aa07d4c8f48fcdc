"""Fast broadcast path for the edge (EDGE_FAST_BROADCAST; eventlet only).

Server-to-client WebSocket frames are not masked, so every recipient of one
broadcast gets the very same bytes. Stock python-socketio/python-engineio encode
the Socket.IO packet once but then, per recipient, queue the Engine.IO packet,
wake that socket's writer greenthread, frame it in pure Python and `sendall` it.
Here the frame is built once and written with one non-blocking `send()` per
recipient.

Order and the contract are kept by falling back to the stock per-socket queue
whenever a direct write could overtake or interleave with anything:
- the socket is not (yet) a websocket: polling, or mid-upgrade;
- the socket is closing/closed, or a ping is outstanding (the stock send path
  checks the ping timeout);
- the socket's queue holds packets (acks, earlier emits), or its writer is in the
  middle of a write (the WebSocket's send lock is held);
- the packet has binary attachments or an ack callback (per-recipient packets).
If the kernel takes only part of the frame (send buffer full: a slow reader), the
rest is queued as a raw-bytes packet, so the writer finishes that frame before
anything else, and everything after it goes through the queue until it drains.
"""
from __future__ import annotations

import collections
import logging
import struct
import time

from engineio import packet as eio_packet
from engineio import socket as engineio_socket
from socketio import packet as sio_packet

log = logging.getLogger(__name__)


class RawFrame(bytes):
    """Bytes of an already framed WebSocket message (or the tail of one)."""


class RawFramePacket(eio_packet.Packet):
    """Queued remainder of a frame whose start was written directly."""

    def __init__(self, frame: bytes):
        super().__init__(eio_packet.MESSAGE, data="")
        self.frame = RawFrame(frame)

    def encode(self, b64=False):
        return self.frame


def text_frame(payload: str) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2)."""
    data = payload.encode("utf-8")
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + data


# --------------------------------------------------------------------- transport side
def install_websocket_hook(eio_server) -> None:
    """Wrap the async driver's WebSocket factory so that each Engine.IO socket
    knows its eventlet WebSocket while the websocket transport runs."""
    async_ = dict(eio_server._async)  # the driver's dict is shared: copy it
    original = async_.get("websocket")
    if original is None:
        return

    def factory(handler, server):
        eio_socket = getattr(handler, "__self__", None)
        if eio_socket is None:
            return original(handler, server)

        def run(ws):
            _adopt(eio_socket, ws)
            try:
                return handler(ws)
            finally:
                eio_socket._fast_ws = None

        return original(run, server)

    async_["websocket"] = factory
    eio_server._async = async_


def _adopt(eio_socket, ws) -> None:
    sock = getattr(ws, "socket", None)
    raw = getattr(sock, "fd", None)  # eventlet GreenSocket -> the real non-blocking socket
    if raw is None or not hasattr(ws, "_send") or not hasattr(ws, "_sendlock"):
        eio_socket._fast_ws = None
        return
    stock_send = ws.send

    def send(message, **kw):
        if type(message) is RawFrame:
            return ws._send(message)
        return stock_send(message, **kw)

    ws.send = send  # the writer greenthread calls ws.send(pkt.encode())
    ws._fast_raw = raw
    eio_socket._fast_ws = ws


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
    fast_partial = 0

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
        writes = fallbacks = 0
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip_sid:
                continue
            s = sockets.get(eio_sid)
            if s is None:
                continue
            ws = s.__dict__.get("_fast_ws")
            if (ws is None or not s.upgraded or s.upgrading or s.closing or s.closed
                    or s.last_ping or ws._sendlock.locked() or s.queue.qsize()):
                fallbacks += 1
                s.send(eio_pkt)
                continue
            if frame is None:
                frame = text_frame(eio_pkt.encode())
            try:
                n = ws._fast_raw.send(frame)
            except BlockingIOError:
                n = 0
            except OSError:
                fallbacks += 1
                s.send(eio_pkt)  # the stock path notices the broken socket
                continue
            writes += 1
            if n < len(frame):
                if not self.fast_partial:
                    log.info("fast path: send buffer of %s full (slow reader); rest of the frame queued", eio_sid)
                self.fast_partial += 1
                s.queue.put(RawFramePacket(frame[n:]))
        self.fast_writes += writes
        self.fast_fallbacks += fallbacks


__all__ = ["FastEmitMixin", "install_websocket_hook", "install_ping_wheel", "PingWheel", "text_frame", "RawFrame",
           "RawFramePacket"]
