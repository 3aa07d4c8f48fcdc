"""Engine.IO's websocket transport without a greenthread per connection (eventlet).

Stock python-engineio serves a websocket with two greenthreads for its whole life:
the WSGI request's, blocked reading frames, and a writer blocked on the socket's
queue. Each keeps its saved stack and interpreter frames (~7.5 KB measured here),
the request keeps eventlet's HTTP buffers, parsed headers and environ alive, and
every packet sent is a queue put, a wake-up and a frame built per recipient.

Here, once the handshake is written, a connection is a small object that the hub
calls back when its socket is readable (or, with output pending, writable):

- Reading: frames are parsed in the hub callback. Complete Engine.IO packets go to
  the connection's inbox, which one short-lived greenthread drains in order, so the
  handlers of one socket still run one after another (PROTOCOL §3). While the inbox
  is long, reading pauses: a client that sends faster than its handlers run meets
  TCP backpressure, as it did with the blocking reader.
- Writing: frames go out with a non-blocking send() from whichever greenthread
  sends. What the kernel does not take is kept, in order, and flushed when the
  socket is writable; everything sent later queues behind it. A client that lets
  more than `max_buffered` bytes pile up is disconnected (`transport error`).
- The handshake's greenthread returns right after it. A handshake that edge.acceptor
  answered hands over the accepted socket itself. One that came through eventlet's
  HTTP server (an upgrade of a polling session's kept-alive connection, a head the
  acceptor does not answer) has the socket dup()ed first, and `finish()` of the edge's
  HTTP protocol skips the shutdown for a detached request, so eventlet's request
  (buffers, headers) is freed.

Engine.IO state (sid, pings, the polling→websocket upgrade, close reasons) stays
python-engineio's: the socket's class becomes `DirectSocket`, which only changes
how packets reach the wire and how the transport closes.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import logging
import struct

import eventlet
import greenlet
from eventlet import hubs, wsgi
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio import socket as engineio_socket

log = logging.getLogger(__name__)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# environ key set on a request whose socket this module took over (see
# edge.server.EdgeHttpProtocol.finish: no shutdown of a detached socket).
DETACHED = "edge.ws_detached"
# environ key under which edge.acceptor passes the accepted (non-blocking) socket: it is
# adopted as it is, where a socket of eventlet's HTTP server is dup()ed.
RAW_SOCKET = "edge.raw_socket"
# Bytes read per readable event: a few frames of a busy client, one syscall.
RECV_BYTES = 65536
# Reading pauses while this many packets wait for the socket's handlers, and
# resumes once the inbox is down to INBOX_RESUME.
INBOX_PAUSE = 32
INBOX_RESUME = 8
# A closing connection gets this long to flush what it still owes before the
# socket is closed regardless (a client that stopped reading).
CLOSE_FLUSH_S = 5.0

# RFC 6455 opcodes and close codes
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG = 1000, 1002, 1007, 1009

# connection states
PROBE, AWAIT_UPGRADE, OPEN = "probe", "await_upgrade", "open"


# --------------------------------------------------------------------- frames
def frame(opcode: int, data: bytes) -> bytes:
    """An unmasked, final server frame (RFC 6455 §5.2)."""
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + data


def text_frame(payload: str) -> bytes:
    return frame(OP_TEXT, payload.encode("utf-8"))


def packet_frame(pkt: eio_packet.Packet) -> bytes:
    encoded = pkt.encode()
    if isinstance(encoded, str):
        return frame(OP_TEXT, encoded.encode("utf-8"))
    return frame(OP_BINARY, encoded)  # Engine.IO 4 binary message: the raw bytes


def close_frame(code: int) -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code))


def unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class ProtocolError(Exception):
    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


# --------------------------------------------------------------------- Engine.IO socket
class DirectSocket(engineio_socket.Socket):
    """An Engine.IO socket whose websocket is a WebSocketConnection. Before the
    upgrade completes (polling, probe) everything behaves as stock."""

    _conn: "WebSocketConnection | None" = None

    def send(self, pkt):
        conn = self._conn
        if conn is None or not self.upgraded:
            return super().send(pkt)  # stock: queued for polling / held during the upgrade
        if not self.check_ping_timeout():
            return
        conn.write(packet_frame(pkt))

    def close(self, wait=True, abort=False, reason=None):
        conn = self._conn
        if conn is None:
            return super().close(wait=wait, abort=abort, reason=reason)
        if self.closed or self.closing:
            return
        if _in_hub():
            # the disconnect handlers below do I/O: never in the hub's own greenlet
            eventlet.spawn_n(self.close, False, abort, reason)
            return
        if not self.upgraded:  # polling session with a probing websocket
            super().close(wait=wait, abort=abort, reason=reason)
            conn.close()
            return
        self.closing = True
        self.server._trigger_event("disconnect", self.sid,
                                   reason or self.server.reason.SERVER_DISCONNECT, run_async=False)
        if not abort:
            conn.write(packet_frame(eio_packet.Packet(eio_packet.CLOSE)))
        self.closed = True
        self.server.sockets.pop(self.sid, None)
        conn.close()


def _in_hub() -> bool:
    return greenlet.getcurrent() is hubs.get_hub().greenlet


# --------------------------------------------------------------------- the connection
class WebSocketConnection:
    __slots__ = ("sock", "fd", "eio", "state", "hub", "reader", "writer", "rbuf", "out", "out_bytes",
                 "frag", "frag_op", "frag_bytes", "inbox", "draining", "closed", "closing", "lost",
                 "max_message", "max_buffered", "close_timer", "pending", "flusher")

    def __init__(self, sock, eio_socket, *, max_message: int, max_buffered: int):
        self.sock = sock
        self.fd = sock.fileno()
        self.eio = eio_socket
        self.state = OPEN
        self.hub = hubs.get_hub()
        self.reader = None
        self.writer = None
        self.rbuf = b""
        self.out: collections.deque | None = None
        self.out_bytes = 0
        self.frag: list | None = None
        self.frag_op = 0
        self.frag_bytes = 0
        self.inbox: collections.deque | None = None
        self.draining = False
        self.closed = False
        self.closing = False
        self.lost = False
        self.max_message = max_message
        self.max_buffered = max_buffered
        self.close_timer = None
        self.pending: list | None = None
        self.flusher = _flusher()

    # ---- lifecycle
    def start_reading(self) -> None:
        if self.reader is None and not self.closed and not self.lost:
            self.reader = self.hub.add(self.hub.READ, self.fd, self._on_readable, _noop, _noop)

    def stop_reading(self) -> None:
        if self.reader is not None:
            self.hub.remove(self.reader)
            self.reader = None

    def close(self) -> None:
        """Close after flushing what is owed (at most CLOSE_FLUSH_S)."""
        if self.closed or self.closing:
            return
        self.closing = True
        self.stop_reading()
        self._flush_pending()
        if self.out and not self.lost:
            self.close_timer = self.hub.schedule_call_global(CLOSE_FLUSH_S, self._shutdown)
            return
        self._shutdown()

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop_reading()
        if self.writer is not None:
            self.hub.remove(self.writer)
            self.writer = None
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if not self.lost and not self.out:
            try:
                self.sock.send(close_frame(CLOSE_NORMAL))
            except OSError:
                pass
        self.out = None
        try:
            self.sock.close()
        except OSError:
            pass
        if self.eio._conn is self and not self.eio.upgraded:
            self.eio._conn = None  # a failed upgrade: the polling session goes on
            self.eio.upgrading = False

    def _lose(self, reason: str, code: int | None = None) -> None:
        """The transport is gone or broken: stop reading, tell the client when we
        can, and let the socket's handlers close the Engine.IO session in order."""
        if self.lost:
            return
        if code is not None and not self.closed:
            try:
                self.sock.send(close_frame(code))
            except OSError:
                pass
        self.lost = True
        self.stop_reading()
        if self.state != OPEN:  # failed upgrade: only the websocket goes
            self._shutdown()
            return
        self._deliver(reason)

    # ---- writing
    def write(self, data: bytes, *, at_once: bool = False) -> None:
        """Send a frame, in order behind whatever this connection still owes.

        The frame waits for the end of this pass of the hub, or for the end of the
        socket's handler that wrote it (`_drain`), so that the frames written together
        (the broadcasts of one burst of pub/sub messages, an ack and the events after
        it) leave in one send(). With
        `at_once`, for a writer that knows nothing else will come in this pass, a frame
        with nothing in front of it leaves now: a broadcast's first recipients then do
        not wait while the frame is queued for the last ones."""
        if self.closed or self.lost:
            return
        if self.out:  # the kernel has not taken earlier bytes yet: keep order
            self._backlog(data)
        elif self.pending is not None:
            self.pending.append(data)
        elif at_once:
            self._send(data)
        else:
            self.pending = [data]
            self.flusher.mark(self)

    def _flush_pending(self) -> None:
        frames, self.pending = self.pending, None
        if not frames or self.closed or self.lost:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        if self.out:
            self._backlog(data)
            return
        self._send(data)

    def _send(self, data: bytes) -> None:
        """One non-blocking send() of bytes nothing is queued in front of; what the
        kernel does not take waits in the backlog for the socket to be writable."""
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._lose(self.eio.server.reason.TRANSPORT_ERROR)
            return
        if n < len(data):
            self.out = collections.deque()
            self._backlog(memoryview(data)[n:])

    def _backlog(self, data) -> None:
        self.out.append(data)
        self.out_bytes += len(data)
        if self.out_bytes > self.max_buffered:
            log.info("%s: %d bytes unsent to a client that does not read: disconnecting",
                     self.eio.sid, self.out_bytes)
            self.out.clear()
            self.out_bytes = 0
            self._lose(self.eio.server.reason.TRANSPORT_ERROR)
            return
        if self.writer is None:
            self.writer = self.hub.add(self.hub.WRITE, self.fd, self._on_writable, _noop, _noop)

    def _on_writable(self, _fd) -> None:
        out = self.out
        try:
            while out:
                chunk = out[0]
                try:
                    n = self.sock.send(chunk)
                except (BlockingIOError, InterruptedError):
                    return
                self.out_bytes -= n
                if n < len(chunk):
                    out[0] = memoryview(chunk)[n:]
                    return
                out.popleft()
        except OSError:
            if out is not None:
                out.clear()
            self._lose(self.eio.server.reason.TRANSPORT_ERROR)
        if self.writer is not None:
            self.hub.remove(self.writer)
            self.writer = None
        if self.closing:
            self._shutdown()

    # ---- reading
    def _on_readable(self, _fd) -> None:
        try:
            data = self.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            if not data:
                self._lose(self.eio.server.reason.TRANSPORT_CLOSE)
                return
            self.rbuf = self.rbuf + data if self.rbuf else data
            self._parse()
        except ProtocolError as exc:
            log.info("%s: websocket protocol error: %s", self.eio.sid, exc)
            self._lose(self.eio.server.reason.TRANSPORT_ERROR, exc.code)
        except Exception:  # never let the hub see it
            log.exception("%s: websocket read failed", self.eio.sid)
            self._lose(self.eio.server.reason.TRANSPORT_ERROR, CLOSE_PROTOCOL_ERROR)

    def _parse(self) -> None:
        buf, pos, end = self.rbuf, 0, len(self.rbuf)
        while end - pos >= 2 and not self.lost:
            b0, b1 = buf[pos], buf[pos + 1]
            opcode, length, head = b0 & 0x0F, b1 & 0x7F, 2
            if b0 & 0x70:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
            if not b1 & 0x80:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "client frame not masked")
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if opcode >= OP_CLOSE:
                if length > 125 or not b0 & 0x80:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "bad control frame")
            elif self.frag_bytes + length > self.max_message:
                raise ProtocolError(CLOSE_TOO_BIG, "message too large")
            start = pos + head + 4
            if end - start < length:
                break
            payload = unmask(buf[start:start + length], buf[pos + head:start])
            pos = start + length
            self._frame(opcode, bool(b0 & 0x80), payload)
        self.rbuf = buf[pos:] if pos < end else b""

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY):
            if self.frag is not None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            if fin:
                self._message(opcode, payload)
            else:
                self.frag, self.frag_op, self.frag_bytes = [payload], opcode, len(payload)
        elif opcode == OP_CONT:
            if self.frag is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
            self.frag.append(payload)
            self.frag_bytes += len(payload)
            if fin:
                data, op = b"".join(self.frag), self.frag_op
                self.frag, self.frag_bytes = None, 0
                self._message(op, data)
        elif opcode == OP_PING:
            self.write(frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = CLOSE_NORMAL
            if len(payload) >= 2:
                code = int.from_bytes(payload[:2], "big")
            self._lose(self.eio.server.reason.TRANSPORT_CLOSE, code if 1000 <= code < 5000 else CLOSE_NORMAL)
        else:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                data = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(CLOSE_INVALID_DATA, "text message is not UTF-8") from None
        else:
            data = payload
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
        except Exception:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "not an Engine.IO packet") from None
        s = self.eio
        if self.state == OPEN:
            if pkt.packet_type == eio_packet.PONG:
                s.schedule_ping()  # O(1), no I/O: right here rather than via the inbox
            else:
                self._deliver(pkt)
        elif self.state == PROBE:
            if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
                log.info("%s: failed websocket upgrade, no PING probe", s.sid)
                self._lose(s.server.reason.TRANSPORT_ERROR)
                return
            self.write(packet_frame(eio_packet.Packet(eio_packet.PONG, data="probe")))
            s.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            self.state = AWAIT_UPGRADE
        else:  # AWAIT_UPGRADE
            if pkt.packet_type != eio_packet.UPGRADE:
                log.info("%s: failed websocket upgrade, got packet type %s", s.sid, pkt.packet_type)
                self._lose(s.server.reason.TRANSPORT_ERROR)
                return
            s.upgraded, s.upgrading, self.state = True, False, OPEN
            self.flush_queue()

    def flush_queue(self) -> None:
        """Send what the stock transport queued (the OPEN packet, packets held
        during the upgrade) before anything else."""
        q, s = self.eio.queue, self.eio
        empty = s.server.get_queue_empty_exception()
        while True:
            try:
                pkt = q.get(block=False)
            except empty:
                return
            q.task_done()
            if pkt is None:  # closed meanwhile
                self._lose(s.server.reason.SERVER_DISCONNECT)
                return
            self.write(packet_frame(pkt))

    # ---- the socket's handlers, in order, in one greenthread at a time
    def _deliver(self, item) -> None:
        if self.inbox is None:
            self.inbox = collections.deque()
        self.inbox.append(item)
        if len(self.inbox) >= INBOX_PAUSE:
            self.stop_reading()
        if not self.draining:
            self.draining = True
            eventlet.spawn_n(self._drain)

    def _drain(self) -> None:
        s = self.eio
        try:
            while self.inbox:
                item = self.inbox.popleft()
                if isinstance(item, str):  # the transport ended, with this reason
                    self.inbox = None
                    s.close(wait=False, abort=True, reason=item)
                    self._shutdown()
                    return
                try:
                    s.receive(item)
                except (eio_exceptions.UnknownPacketError, eio_exceptions.SocketIsClosedError):
                    pass
                except Exception:
                    log.exception("%s: receive error", s.sid)
                    self._lose(s.server.reason.TRANSPORT_ERROR)
                if self.pending is not None:
                    # What the handler answered (its ack, `authenticated` after a CONNECT)
                    # leaves now rather than at the end of the hub's pass, which in a
                    # connect storm is milliseconds away.
                    self._flush_pending()
                if self.reader is None and not self.lost and len(self.inbox) <= INBOX_RESUME:
                    self.start_reading()
            self.inbox = None
        finally:
            self.draining = False


def _noop(*_args) -> None:
    pass


class _Flusher:
    """Sends the frames connections were given during one pass of the hub: a timer
    of zero seconds runs once the greenthread that wrote yields (e.g. the pub/sub
    listener, after every message it had already read)."""

    def __init__(self, hub):
        self.hub = hub
        self.dirty: list[WebSocketConnection] = []
        self.scheduled = False

    def mark(self, conn: WebSocketConnection) -> None:
        self.dirty.append(conn)
        if not self.scheduled:
            self.scheduled = True
            self.hub.schedule_call_global(0, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            try:
                conn._flush_pending()
            except Exception:  # one broken connection must not keep the others waiting
                log.exception("%s: flush failed", conn.eio.sid)


_flushers: dict[int, _Flusher] = {}


def _flusher() -> _Flusher:
    hub = hubs.get_hub()
    found = _flushers.get(id(hub))
    if found is None:
        found = _flushers[id(hub)] = _Flusher(hub)
    return found


# --------------------------------------------------------------------- the upgrade
class _Upgrade:
    """What python-engineio calls as its `websocket` WSGI app for one socket."""

    def __init__(self, eio_socket, server, max_buffered: int):
        self.eio = eio_socket
        self.server = server
        self.max_buffered = max_buffered

    def __call__(self, environ, start_response):
        connection = {p.strip() for p in environ.get("HTTP_CONNECTION", "").lower().split(",")}
        if "upgrade" not in connection or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            start_response("400 Bad Request", [("Connection", "close")])
            return []
        if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
            start_response("426 Upgrade Required", [("Connection", "close"), ("Sec-WebSocket-Version", "13")])
            return []
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if not valid_key:
            start_response("400 Bad Request", [("Connection", "close")])
            return []
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
        raw = environ.get(RAW_SOCKET)   # edge.acceptor's handshake: the accepted socket
        if raw is None:   # eventlet's HTTP server: a dup, as it closes its own descriptor
            raw = environ["eventlet.input"].get_socket().fd.dup()
            raw.setblocking(False)
            wsgi.WSGI_LOCAL.already_handled = True
        environ[DETACHED] = True
        # No Sec-WebSocket-Extensions: compression is refused (edge.server). The response
        # leaves with the Engine.IO OPEN packet, in one send: on loopback, where a send
        # also runs the receiver's side of TCP, each costs tens of µs.
        adopt(self.eio, raw, self.server, self.max_buffered,
              preface=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        return []


def adopt(eio_socket, raw, server, max_buffered: int, preface: bytes = b"") -> WebSocketConnection:
    """Serve `raw` as the socket's websocket; `preface` (the handshake response) is
    written before any frame."""
    conn = WebSocketConnection(raw, eio_socket, max_message=int(server.max_http_buffer_size),
                               max_buffered=max_buffered)
    if preface:
        conn.write(preface)
    eio_socket.__class__ = DirectSocket
    eio_socket._conn = conn
    if eio_socket.connected:  # a polling session upgrading: hold sends until UPGRADE
        eio_socket.upgrading = True
        conn.state = PROBE
    else:
        eio_socket.connected = True
        eio_socket.upgraded = True
        conn.flush_queue()
    _trim_environ(server, eio_socket.sid)
    conn.start_reading()
    return conn


# environ values python-socketio keeps for the socket's life; the rest (eventlet's
# input and hooks, raw header tuples) would keep the finished request alive.
def _trim_environ(server, sid) -> None:
    handler = server.handlers.get("connect")
    owner = getattr(handler, "__self__", None)
    environs = getattr(owner, "environ", None)
    if isinstance(environs, dict) and sid in environs:
        environs[sid] = {k: v for k, v in environs[sid].items() if isinstance(v, str)}


def install(eio_server, max_buffered: int) -> None:
    """Serve this Engine.IO server's websockets with WebSocketConnection."""
    async_ = dict(eio_server._async)  # the driver's dict is shared: copy it

    def factory(handler, server):
        return _Upgrade(handler.__self__, server, max_buffered)

    async_["websocket"] = factory
    eio_server._async = async_


__all__ = ["install", "adopt", "DirectSocket", "WebSocketConnection", "text_frame", "frame", "unmask",
           "DETACHED"]
