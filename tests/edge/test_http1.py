"""edge.http1: the edge's request parsing, on its own and in a running edge node."""
import io
import socket
from http import HTTPStatus
from urllib.parse import urlsplit

import pytest

from edge import http1
from tests import support


# --- read_headers on its own -------------------------------------------------------------
def test_headers_are_read_up_to_the_empty_line_and_keep_repeats_and_order():
    rfile = io.BytesIO(b"Host: a\r\nX-Dup: 1\r\nx-dup:  2 \t\r\nEmpty:\r\n\r\nbody")
    headers = http1.read_headers(rfile)
    assert headers.items() == [("Host", "a"), ("X-Dup", "1"), ("x-dup", "2"), ("Empty", "")]
    assert headers.get("X-DUP") == "1" and headers.get_all("x-dup") == ["1", "2"]
    assert rfile.read() == b"body"


def test_bare_newlines_and_end_of_input_end_the_block():
    assert http1.read_headers(io.BytesIO(b"A: 1\nB: 2\n\n")).items() == [("A", "1"), ("B", "2")]
    assert http1.read_headers(io.BytesIO(b"A: 1\r\n")).items() == [("A", "1")]


@pytest.mark.parametrize("block, status", [
    (b"A: 1\r\n  folded\r\n\r\n", HTTPStatus.BAD_REQUEST),
    (b"no colon here\r\n\r\n", HTTPStatus.BAD_REQUEST),
    (b"Space before : colon\r\n\r\n", HTTPStatus.BAD_REQUEST),
    (b": no name\r\n\r\n", HTTPStatus.BAD_REQUEST),
    (b"".join(b"H%d: v\r\n" % i for i in range(http1.MAX_HEADERS + 1)) + b"\r\n",
     HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
    (b"Long: " + b"v" * http1.MAX_LINE + b"\r\n\r\n", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
])
def test_malformed_blocks_are_refused(block, status):
    with pytest.raises(http1.BadHeaders) as refused:
        http1.read_headers(io.BytesIO(block))
    assert refused.value.status == status


# --- in a running edge node ----------------------------------------------------------
def _connect() -> socket.socket:
    where = urlsplit(support.EDGE1)
    return socket.create_connection((where.hostname, where.port), timeout=5)


def _until_closed(raw: bytes) -> bytes:
    """Send raw bytes to edge 1 and read until it closes the connection."""
    with _connect() as sock:
        sock.sendall(raw)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_request_is_served_and_a_kept_alive_connection_serves_the_next():
    one = b"GET /healthz HTTP/1.1\r\nHost: edge\r\nUser-Agent: t\r\n\r\n"
    with _connect() as sock:
        sock.sendall(one + one)
        got = b""
        while got.count(b"ok\n") < 2:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {got!r}"
            got += chunk
    assert got.count(b"HTTP/1.1 200 OK") == 2


def test_connection_close_is_honoured():
    # _until_closed returns only if the edge closes the connection (else: timeout).
    got = _until_closed(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"ok\n")


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /healthz HTTP/2.0\r\nHost: edge\r\n\r\n", 505),
    (b"GET /healthz HTTP/1.x\r\nHost: edge\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: edge\r\n folded\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost : edge\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nLong: " + b"v" * 9000 + b"\r\n\r\n", 400),   # eventlet's line limit
])
def test_malformed_requests_get_an_error_status(request_bytes, status):
    assert _status(_until_closed(request_bytes)) == status
