"""The edge's websocket transport (edge/wsconn.py): RFC 6455 spoken by hand over a raw
TCP socket, so that what a browser or a broken client may send (fragments, control
frames, unmasked or oversize frames, bad UTF-8) is exercised exactly, and the
python-socketio client for the Engine.IO paths (polling, the upgrade)."""
import base64
import collections
import hashlib
import json
import os
import socket
import struct
import time
from types import SimpleNamespace

import eventlet
import pytest
import socketio

from edge.wsconn import WebSocketConnection, unmask
from realtime import keys
from tests import support
from tests.support import unique

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ------------------------------------------------------------------ a raw client
class RawWs:
    def __init__(self, url: str = support.EDGE1, *, version: str = "13", rcvbuf: int | None = None):
        port = int(url.rsplit(":", 1)[1])
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\n"
                           f"Sec-WebSocket-Version: {version}\r\n\r\n").encode())
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.decode().partition(":") for line in head.split(b"\r\n")[1:] if line)}

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
                   declared_length: int | None = None) -> None:
        n = len(payload) if declared_length is None else declared_length
        b0 = (0x80 if fin else 0) | opcode
        mbit = 0x80 if masked else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if masked:
            mask = os.urandom(4)
            self.sock.sendall(head + mask + unmask(payload, mask))  # XOR both ways
        else:
            self.sock.sendall(head + payload)

    def send_text(self, text: str, **kw) -> None:
        self.send_frame(0x1, text.encode(), **kw)

    def frame(self) -> tuple[int, bytes]:
        b0, b1 = self._read_exactly(2)
        assert not b1 & 0x80, "server frames are never masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exactly(8))[0]
        return b0 & 0x0F, self._read_exactly(n)

    def text(self, skip_pings: bool = True) -> str:
        while True:
            opcode, payload = self.frame()
            assert opcode == 0x1, (opcode, payload)
            data = payload.decode()
            if skip_pings and data == "2":
                self.send_text("3")
                continue
            return data

    def close_code(self) -> int:
        """Read until the server's close frame; its status code."""
        while True:
            opcode, payload = self.frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def closed_by_server(self, timeout: float = 10) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionError, socket.timeout):
            return False
        return True

    def open_socketio(self, user: str) -> str:
        assert self.text().startswith("0")
        self.send_text("40" + json.dumps({"token": support.token(user)}))
        reply = self.text()
        assert reply.startswith("40"), reply
        return reply

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw():
    made = []

    def make(*args, **kwargs) -> RawWs:
        ws = RawWs(*args, **kwargs)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close()


# ------------------------------------------------------------------ unit
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 1000, 70000])
def test_unmask_is_the_rfc_xor(n):
    payload, mask = os.urandom(n), os.urandom(4)
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# ------------------------------------------------------------------ handshake
def test_handshake_answers_the_key_and_opens_engineio(raw):
    ws = raw()
    assert ws.status == 101
    expected = base64.b64encode(hashlib.sha1(ws.key.encode() + WS_GUID).digest()).decode()
    assert ws.headers["sec-websocket-accept"] == expected
    assert "sec-websocket-extensions" not in ws.headers  # compression refused
    opened = json.loads(ws.text()[1:])
    assert opened["sid"].startswith("edge1.") and opened["upgrades"] == []


def test_unsupported_websocket_version_is_refused(raw):
    assert raw(version="8").status == 426


# ------------------------------------------------------------------ frames
def test_fragmented_messages_are_reassembled(raw):
    ws = raw()
    assert ws.text().startswith("0")
    connect = "40" + json.dumps({"token": support.token(unique("frag"))})
    ws.send_text(connect[:5], fin=False)
    ws.send_frame(0x0, connect[5:].encode())
    assert ws.text().startswith("40")
    event = '421["history",{"conversation_id":"no-such-conversation"}]'
    ws.send_text(event[:3], fin=False)
    ws.send_frame(0x9, b"in-between")  # a control frame may come between fragments
    ws.send_frame(0x0, event[3:10].encode(), fin=False)
    ws.send_frame(0x0, event[10:].encode())
    texts, pongs = [], []
    while not any(t.startswith("431") for t in texts):
        opcode, payload = ws.frame()
        (pongs if opcode == 0xA else texts).append(payload if opcode == 0xA else payload.decode())
    assert pongs == [b"in-between"]
    got = next(t for t in texts if t.startswith("431"))
    assert json.loads(got[3:])[0]["error"]["code"] == "not_found"


def test_ping_frame_gets_a_pong_with_its_payload(raw):
    ws = raw()
    ws.text()
    ws.send_frame(0x9, b"are you there")
    assert ws.frame() == (0xA, b"are you there")


def test_unmasked_client_frame_closes_with_protocol_error(raw):
    ws = raw()
    ws.text()
    ws.send_text("40", masked=False)
    assert ws.close_code() == 1002
    assert ws.closed_by_server()


def test_oversize_message_closes_before_its_payload_arrives(raw):
    ws = raw()
    ws.text()
    ws.send_frame(0x1, b"", declared_length=2 * 1024 * 1024)  # header only: 2 MB announced
    assert ws.close_code() == 1009
    assert ws.closed_by_server()


def test_text_that_is_not_utf8_closes_with_invalid_data(raw):
    ws = raw()
    ws.text()
    ws.send_frame(0x1, b"42\xff\xfe")
    assert ws.close_code() == 1007


def test_client_close_frame_ends_the_session(raw):
    from realtime import connections, redis_client
    r = redis_client.make_redis(support.SETTINGS)
    user = unique("closer")
    ws = raw()
    ws.open_socketio(user)
    support.eventually(lambda: connections.is_connected(r, user), message="registered")
    ws.send_frame(0x8, struct.pack("!H", 1000))
    assert ws.close_code() == 1000
    # the edge ran its disconnect handlers: the registry entry is gone
    support.eventually(lambda: not connections.is_connected(r, user), message="registry entry removed")


# ------------------------------------------------------------------ Engine.IO paths
def test_polling_session_upgrades_to_websocket(clients):
    user = unique("upgrader")
    c = clients(support.EDGE1, user=user, transports=["polling", "websocket"])
    support.eventually(lambda: c.sio.transport() == "websocket", message="upgraded to websocket")
    conv = support.make_conversation([user])
    assert c.call("join_room", {"conversation_id": conv})["ok"]


def test_polling_only_client_works(clients):
    user = unique("poller")
    c = clients(support.EDGE1, user=user, transports=["polling"])
    conv = support.make_conversation([user])
    assert c.call("join_room", {"conversation_id": conv})["ok"]
    assert c.sio.transport() == "polling"


# ------------------------------------------------------------------ slow consumers
@pytest.fixture(scope="module")
def small_buffer_edge():
    proc = support.start_edge(5021, "wstest1", {"EDGE_WS_MAX_BUFFERED_BYTES": str(256 * 1024)})
    yield "http://127.0.0.1:5021"
    support.stop_process(proc)


def test_client_that_stops_reading_is_disconnected_at_the_buffer_limit(raw, clients, small_buffer_edge):
    """Broadcasts pile up for a client that never reads: once more than
    EDGE_WS_MAX_BUFFERED_BYTES wait (beyond what the kernel buffers hold), the edge
    drops it, and a member who reads on the same node gets everything."""
    stalled, reader = unique("stalled"), unique("reader")
    conv = support.make_conversation([stalled, reader])
    ws = raw(small_buffer_edge, rcvbuf=4096)
    ws.open_socketio(stalled)
    ws.send_text("421" + json.dumps(["join_room", {"conversation_id": conv}]))
    ack = ws.text()
    while not ack.startswith("431"):
        ack = ws.text()
    assert json.loads(ack[3:])[0]["ok"]
    other = clients(small_buffer_edge, user=reader)
    assert other.call("join_room", {"conversation_id": conv})["ok"]

    manager = socketio.RedisManager(support.SETTINGS.redis_url, channel=support.SETTINGS.socketio_channel,
                                    write_only=True)
    # ~9.6 MB: beyond the kernel's buffers (a 4 MB send buffer at most here) plus the
    # 256 KB limit. Sent in steps the reading member keeps up with, so that only the
    # stalled client falls behind.
    body, total, step = "z" * 16000, 600, 10
    for i in range(total):
        manager.emit("message_new", {"message": {"seq": i, "body": body}}, room=keys.conversation_room(conv),
                     namespace="/")
        if (i + 1) % step == 0:
            support.eventually(lambda: len(other.received("message_new")) >= i + 1, timeout=10,
                               message=f"the reading member got broadcast {i}")
    assert [m["message"]["seq"] for m in other.received("message_new")] == list(range(total))
    started = time.monotonic()
    assert ws.closed_by_server(timeout=20), "the stalled client was not disconnected"
    assert time.monotonic() - started < 20
    assert other.sio.connected


# ------------------------------------------------------------------ write order
def test_a_frame_written_at_once_leaves_now_unless_something_is_owed_before_it():
    """Frames wait for the end of the hub's pass so that one connection's frames share a
    send(); `at_once` sends now, but never ahead of a frame still waiting."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.settimeout(2)
    conn = WebSocketConnection(ours, SimpleNamespace(sid="t"), max_message=1 << 20, max_buffered=1 << 20)
    try:
        conn.write(b"one", at_once=True)
        assert peer.recv(100) == b"one"          # before the hub has run

        conn.write(b"two")                       # waits for the end of the pass
        conn.write(b"three", at_once=True)       # behind "two": waits too
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)
        eventlet.sleep(0)                        # the pass ends: both in one send()
        peer.settimeout(2)
        assert peer.recv(100) == b"twothree"
    finally:
        ours.close()
        peer.close()


def test_what_a_handler_answers_leaves_when_the_handler_returns():
    """A socket's handlers run in its drain greenthread. What one writes (its ack,
    `authenticated` after a CONNECT) is sent once it returns, in the order written,
    instead of waiting for the end of the hub's pass, which in a connect storm is
    milliseconds away."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    eio = SimpleNamespace(sid="t")
    conn = WebSocketConnection(ours, eio, max_message=1 << 20, max_buffered=1 << 20)
    eio.receive = lambda packet: (conn.write(packet + b"-ack "), conn.write(packet + b"-event "))
    try:
        conn.inbox = collections.deque([b"one", b"two"])
        conn.draining = True
        conn._drain()        # as its greenthread runs it; the hub does not run meanwhile
        received = b""
        with pytest.raises(BlockingIOError):
            while True:
                received += peer.recv(100)
        assert received == b"one-ack one-event two-ack two-event "
    finally:
        conn.stop_reading()
        ours.close()
        peer.close()
