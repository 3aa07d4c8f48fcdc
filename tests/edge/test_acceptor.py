"""edge.acceptor: which requests the edge's accept loop answers itself (plain WebSocket
upgrades) and which go to eventlet's HTTP server, on their own and in a running edge."""
import base64
import json
import os
import socket
import time
from urllib.parse import urlsplit

import pytest

from edge import acceptor
from tests import support

BASE = {"wsgi.version": (1, 0), "wsgi.url_scheme": "http"}


def _head(*headers: str, line: str = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    defaults = ("Host: edge", "Upgrade: websocket", "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13")
    return "\r\n".join((line, *defaults, *headers, "", "")).encode("latin-1")


# --- upgrade_environ on its own ------------------------------------------------------------
def test_a_browser_upgrade_gets_the_environ_eventlet_would_build():
    env = acceptor.upgrade_environ(_head("Origin: https://app.example", "X-Forwarded-For: 10.0.0.1",
                                         "x-forwarded-for: 10.0.0.2", "Cookie: a=1",
                                         line="GET /socket.io/a%20b?EIO=4&transport=websocket HTTP/1.1"),
                                   BASE)
    assert env["REQUEST_METHOD"] == "GET" and env["SCRIPT_NAME"] == ""
    assert env["RAW_PATH_INFO"] == "/socket.io/a%20b" and env["PATH_INFO"] == "/socket.io/a b"
    assert env["QUERY_STRING"] == "EIO=4&transport=websocket"
    assert env["HTTP_UPGRADE"] == "websocket" and env["HTTP_CONNECTION"] == "Upgrade"
    assert env["HTTP_ORIGIN"] == "https://app.example" and env["HTTP_COOKIE"] == "a=1"
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"   # repeats joined, as eventlet does
    assert env["CONTENT_TYPE"] == "text/plain" and "CONTENT_LENGTH" not in env
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["wsgi.input"].read() == b""
    assert env["wsgi.url_scheme"] == "http"


def test_header_names_with_underscores_are_dropped():
    # X_Forwarded_For would otherwise land on the key of X-Forwarded-For.
    env = acceptor.upgrade_environ(_head("X_Forwarded_For: 6.6.6.6"), BASE)
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_each_environ_is_a_fresh_dict():
    one, two = (acceptor.upgrade_environ(_head(), BASE) for _ in range(2))
    one["extra"] = 1
    assert "extra" not in two and "extra" not in BASE and "REQUEST_METHOD" not in BASE


@pytest.mark.parametrize("head", [
    _head(line="POST /socket.io/?EIO=4&transport=websocket HTTP/1.1"),
    _head(line="GET /socket.io/?EIO=4&transport=websocket HTTP/1.0"),
    _head(line="GET /socket.io/?EIO=4&transport=websocket HTTP/1.1 extra"),
    _head(line="GET //socket.io/?EIO=4 HTTP/1.1"),
    _head(line="GET http://edge/socket.io/?EIO=4 HTTP/1.1"),
    _head().replace(b"Upgrade: websocket", b"Upgrade: h2c"),
    _head().replace(b"Upgrade: websocket\r\n", b""),
    _head("Content-Length: 5"),
    _head("Transfer-Encoding: chunked"),
    _head(" folded"),
    _head("Bad Name: v"),
    _head(*(f"H{i}: v" for i in range(101))),
    _head() + b"\x81",               # bytes after the head
    _head()[:-2],                    # no end of head yet
    _head().replace(b"\r\n", b"\n"),  # bare newlines
    _head("A: 1\nB: 2"),           # a bare LF inside the head
    _head("A: 1\rB: 2"),           # a bare CR inside the head
])
def test_anything_but_a_plain_upgrade_is_left_to_eventlet(head):
    assert acceptor.upgrade_environ(head, BASE) is None


# --- in a running edge node ------------------------------------------------------------
def _connect() -> socket.socket:
    where = urlsplit(support.EDGE1)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    return sock


def _read_response_head(sock) -> tuple[int, dict, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, rest


def _socketio_works(sock, rest: bytes, user: str) -> None:
    """The Engine.IO OPEN frame, then a Socket.IO CONNECT with a token gets its ack."""
    sock.settimeout(10)
    buf = rest
    while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7F):
        buf += sock.recv(65536)
    assert buf[2:2 + (buf[1] & 0x7F)].startswith(b"0{")
    payload = ("40" + json.dumps({"token": support.token(user)})).encode()
    assert 125 < len(payload) < 65536
    mask = os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    got = b""
    deadline = time.monotonic() + 10
    while b"40{" not in got and time.monotonic() < deadline:
        got += sock.recv(65536)
    assert b"40{" in got, got


def test_a_handshake_that_arrives_in_pieces_is_answered():
    with _connect() as sock:
        head = _head()
        for i in range(0, len(head), 7):
            sock.sendall(head[i:i + 7])
            time.sleep(0.002)
        status, headers, rest = _read_response_head(sock)
        assert status == 101 and headers["upgrade"] == "websocket"
        _socketio_works(sock, rest, support.unique("pieces"))


def test_a_refused_upgrade_is_answered_and_closed():
    # Engine.IO refuses protocol 3 with a 400. Answered by the accept loop: a complete
    # response with its length, and the connection closed (eventlet's server would keep
    # it open for another request).
    with _connect() as sock:
        sock.sendall(_head(line="GET /socket.io/?EIO=3&transport=websocket HTTP/1.1"))
        status, headers, rest = _read_response_head(sock)
        while chunk := sock.recv(65536):
            rest += chunk
    assert status == 400 and headers["connection"] == "close"
    assert int(headers["content-length"]) == len(rest) > 0


def test_a_head_too_long_for_the_accept_loop_still_upgrades_through_eventlet():
    cookies = [f"Cookie: c{i}=" + "v" * 3000 for i in range(4)]   # ~12 KB, under eventlet's limits
    head = _head(*cookies)
    assert len(head) > acceptor.LEAN_HEAD_LIMIT
    with _connect() as sock:
        sock.sendall(head)
        status, headers, rest = _read_response_head(sock)
        assert status == 101
        _socketio_works(sock, rest, support.unique("bighead"))


def test_a_polling_request_after_bytes_taken_by_the_accept_loop_is_served_whole():
    # Not an upgrade: the accept loop read the head, eventlet's server parses it again
    # from the bytes put back, keeps the connection alive and serves the next request.
    one = b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n"
    with _connect() as sock:
        sock.sendall(one)
        status, _, rest = _read_response_head(sock)
        assert status == 200
        sock.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: edge\r\n\r\n")
        got = rest
        while b'"sid"' not in got:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
    assert b"HTTP/1.1 200" in got


def test_a_connection_closed_before_its_request_leaves_the_node_serving():
    for _ in range(20):
        _connect().close()
    with _connect() as sock:
        sock.sendall(_head())
        status, _, rest = _read_response_head(sock)
        assert status == 101


def test_a_client_that_sends_its_request_late_is_still_served():
    # The listener defers accept() until the first bytes (TCP_DEFER_ACCEPT, 1 s): a client
    # that waits longer than that before speaking must still get its answer.
    with _connect() as sock:
        time.sleep(1.5)
        sock.sendall(_head())
        status, _, rest = _read_response_head(sock)
        assert status == 101
