"""edge.acceptor: which requests the edge's accept loop answers itself (plain WebSocket
upgrades) and which go to eventlet's HTTP server, on their own and in a running edge."""
import base64
import json
import os
import resource
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


# --- connections that never finish their request ---------------------------------------------
HEAD_TIMEOUT_S = 0.5
SLOW_PORTS = {"eventlet": 5044, "gevent": 5045}


@pytest.fixture(scope="module", params=sorted(SLOW_PORTS))
def slow_head_node(request):
    """An edge node, in each async mode, that gives a request head HEAD_TIMEOUT_S to arrive."""
    port = SLOW_PORTS[request.param]
    # A short node id: it starts every session id, and _socketio_works reads a short OPEN frame.
    proc = support.start_edge(port, f"ht{port}",
                              {"EDGE_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S), "EDGE_ASYNC_MODE": request.param})
    yield ("127.0.0.1", port)
    support.stop_process(proc)


def _seconds_until_closed(sock, started: float | None = None, limit_s: float = 10) -> float:
    """How long from `started` (now by default) until the node closes `sock`, reading and
    dropping what it sends."""
    started = time.monotonic() if started is None else started
    sock.settimeout(limit_s)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        pytest.fail(f"still open after {limit_s}s")
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.mark.parametrize("sent", [
    _head()[:40],                                  # half a WebSocket upgrade's head
    b"GET /healthz HTTP/1.1\r\nHost: e",           # half of anything else
    b"G",
])
def test_a_head_that_stops_halfway_is_closed_after_the_timeout(slow_head_node, sent):
    with socket.create_connection(slow_head_node, timeout=10) as sock:
        # Taken before the bytes go: the node's clock for the head starts after it.
        sent_at = time.monotonic()
        sock.sendall(sent)
        # (0.9: gevent's loop may time a wait from its cached clock, a little early.)
        assert HEAD_TIMEOUT_S * 0.9 <= _seconds_until_closed(sock, sent_at) < HEAD_TIMEOUT_S + 3


# The accept loop's deadline is for the whole head; gevent's server times each read.
@pytest.mark.parametrize("slow_head_node", ["eventlet"], indirect=True)
def test_a_head_that_trickles_in_is_held_to_the_timeout_in_all(slow_head_node):
    # Each piece alone comes well within the timeout; the head as a whole does not.
    head = _head()
    with socket.create_connection(slow_head_node, timeout=10) as sock:
        started = time.monotonic()
        for i in range(0, len(head) - 4, 4):
            try:
                sock.sendall(head[i:i + 4])
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(HEAD_TIMEOUT_S / 5)
            if time.monotonic() - started > HEAD_TIMEOUT_S + 3:
                pytest.fail("the trickle was never cut off")
        _seconds_until_closed(sock)
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 3


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout(slow_head_node):
    # Served by eventlet's server (not an upgrade), which then waits for the next request.
    with socket.create_connection(slow_head_node, timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        status, _, _ = _read_response_head(sock)
        assert status == 200
        assert _seconds_until_closed(sock) < HEAD_TIMEOUT_S + 3


def test_the_node_still_serves_upgrades_and_polling_in_time(slow_head_node):
    with socket.create_connection(slow_head_node, timeout=10) as sock:
        sock.sendall(_head())
        status, _, rest = _read_response_head(sock)
        assert status == 101
        time.sleep(HEAD_TIMEOUT_S * 2)   # an open WebSocket is not held to the head's timeout
        _socketio_works(sock, rest, support.unique("afterheads"))
    url = f"http://{slow_head_node[0]}:{slow_head_node[1]}"
    assert support.http_ok(f"{url}/healthz")


# --- running out of descriptors ----------------------------------------------------------------
def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_node_out_of_descriptors_keeps_serving_and_accepts_again_once_some_are_free():
    # accept() fails with EMFILE while the process is at its descriptor limit. The accept
    # loop must log it, back off and carry on (edge.acceptor._ACCEPT_RETRY), not die: the
    # connections waiting in the listen backlog are accepted once descriptors are free.
    port = 5046
    held = []
    log_path = support.ROOT / "var" / "log" / f"test-fd{port}.log"
    logged_before = log_path.stat().st_size if log_path.exists() else 0
    proc = support.start_edge(port, f"fd{port}")
    try:
        spare = 12
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (_open_fds(proc.pid) + spare, 4096))
        for _ in range(spare * 2):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(_head())
            held.append(sock)
        time.sleep(1.0)
        answered = []
        for sock in held:
            sock.settimeout(0.2)
            try:
                answered.append(sock.recv(12).startswith(b"HTTP/1.1 101"))
            except socket.timeout:
                answered.append(False)
        assert proc.poll() is None
        assert 0 < sum(answered) < len(held), answered       # some in, the rest wait
        log = log_path.read_bytes()[logged_before:].decode()
        # Reported, but not each of the ~20 failures a second.
        assert 1 <= log.count("accept failed: [Errno 24] Too many open files") <= 2, log

        for sock, ok in zip(held, answered):
            if ok:
                sock.close()                                  # frees the node's descriptors
        waiting = [sock for sock, ok in zip(held, answered) if not ok]
        for sock in waiting[:spare // 2]:
            sock.settimeout(10)
            status, _, _ = _read_response_head(sock)
            assert status == 101
        assert proc.poll() is None
    finally:
        for sock in held:
            sock.close()
        support.stop_process(proc)
