"""The edge's accept loop (eventlet): WebSocket handshakes without eventlet's HTTP server.

Nearly every connection an edge accepts is an Engine.IO WebSocket handshake, and
eventlet.wsgi gives each one the machinery of a keep-alive HTTP exchange: a GreenThread
with a clean-up link, a green wrapper around the accepted socket, two buffered file
objects over it, an HttpProtocol, a dup() of the socket for edge.wsconn, then the
request's flush, shutdown and close. In a connect storm that machinery was about a
seventh of the edge's py-spy samples (bench W1 10,000: eventlet's HTTP server 28 %, of
which the app itself 14 %); answering the handshake here took 17-36 % off the CPU of a
connect and 2 KB off each idle connection (bench/REPORT.md).

Here each accepted socket goes to a pooled greenlet that reads the request head itself.
A plain WebSocket upgrade (GET, HTTP/1.1, `Upgrade: websocket`, no body, nothing sent
after the head, a head that fits LEAN_HEAD_LIMIT and that the strict parser of
edge.http1 accepts) is answered from that head: the app gets a WSGI environ built as
eventlet builds it, and edge.wsconn adopts the accepted socket itself (wsconn.RAW_SOCKET).
If the app answers with an HTTP error instead (a refused origin, a bad query), the
answer is written and the connection closed.

Everything else (polling, probes, heads that are malformed, oversize or in pieces
beyond the limit) goes to eventlet's HTTP server unchanged, the bytes already read put
back in front of the socket's input: its parsing, limits and error answers stay what
they were.

Every connection has EDGE_HEAD_TIMEOUT_S to send its request head, and on the plain HTTP
side each read or write (idle keep-alive included) waits at most as long: a connection
that sends half a head, or nothing, is closed then instead of holding a descriptor and
a pooled greenlet for good (eventlet's own server waits forever by default).
"""
from __future__ import annotations

import errno
import io
import logging
import socket
import time
import urllib.parse

import eventlet
import eventlet.wsgi
from eventlet import greenio, patcher
from eventlet.hubs import trampoline

from . import http1, wsconn

log = logging.getLogger(__name__)

# Longest request head answered here. A browser's WebSocket upgrade is 0.5-2 KB;
# anything longer goes to eventlet's server, which applies its own limits.
LEAN_HEAD_LIMIT = 8192
HEAD_END = b"\r\n\r\n"

# accept() errors that mean "this one connection failed", not "the listener is broken"
_ACCEPT_RETRY = {errno.ECONNABORTED, errno.EPROTO, errno.ENOBUFS, errno.ENOMEM,
                 errno.EMFILE, errno.ENFILE, errno.EPERM}
# How long the accept loop waits after running out of descriptors or memory.
ACCEPT_BACKOFF_S = 0.05
# accept() failures are logged at most this often, with how many there were: a node at its
# descriptor limit fails 1 / ACCEPT_BACKOFF_S times a second until descriptors free up.
ACCEPT_FAILURE_LOG_EVERY_S = 10.0

_RawSocket = patcher.original("socket").socket


def upgrade_environ(head: bytes, base: dict) -> dict | None:
    """The WSGI environ of a plain WebSocket upgrade request, as eventlet would build it
    (same keys and values, but SERVER_PROTOCOL is the request's version and there is no
    `headers_raw`); None for any other request, which eventlet's server then serves."""
    end = head.find(HEAD_END)
    if end < 0 or end + len(HEAD_END) != len(head):
        return None
    text = head[:end].decode("iso-8859-1")
    bare = text.replace("\r\n", "")
    if "\n" in bare or "\r" in bare:
        return None   # a bare CR or LF: eventlet's reader splits lines its own way
    lines = text.split("\r\n")
    words = lines[0].split(" ")
    if (len(words) != 3 or words[0] != "GET" or words[2] != "HTTP/1.1"
            or not words[1].startswith("/") or words[1].startswith("//")
            or len(lines) - 1 > http1.MAX_HEADERS):
        return None
    env = dict(base)
    for line in lines[1:]:
        try:
            name, value = http1.parse_header_line(line)
        except http1.BadHeaders:
            return None
        if "_" in name:
            # eventlet drops these: "X_Forwarded_For" must not pass for X-Forwarded-For.
            continue
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            return None   # a body: eventlet's server reads it
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = value
            continue
        key = "HTTP_" + key
        env[key] = env[key] + "," + value if key in env else value
    if env.get("HTTP_UPGRADE", "").lower() != "websocket":
        return None
    path, _, query = words[1].partition("?")
    env["REQUEST_METHOD"] = "GET"
    env["SCRIPT_NAME"] = ""
    env["RAW_PATH_INFO"] = path
    env["PATH_INFO"] = urllib.parse.unquote(path, encoding="latin1")
    if query or "?" in words[1]:
        env["QUERY_STRING"] = query
    env.setdefault("CONTENT_TYPE", "text/plain")
    env["SERVER_PROTOCOL"] = "HTTP/1.1"
    env["GATEWAY_INTERFACE"] = "CGI/1.1"
    env["wsgi.input"] = io.BytesIO(b"")
    return env


class _Prefixed(io.RawIOBase):
    """A socket's input with bytes already read from it put back in front."""

    def __init__(self, prefix: bytes, raw):
        self.prefix = memoryview(prefix)
        self.raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.prefix:
            n = min(len(b), len(self.prefix))
            b[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        return self.raw.readinto(b)

    def close(self) -> None:
        self.raw.close()
        super().close()


class EdgeHttpServer:
    def __init__(self, listener, app, *, protocol: type[eventlet.wsgi.HttpProtocol], max_size: int,
                 head_timeout_s: float | None = None):
        self.listener = listener            # a GreenSocket (eventlet.listen)
        self.app = app
        self.pool = eventlet.GreenPool(max_size)
        self.head_timeout_s = head_timeout_s or None   # 0: no limit
        # eventlet's server, for what is not a plain upgrade. debug=False: an app error is a
        # bare 500, not a traceback sent to the client. Its socket timeout bounds each read
        # and write of a request there (a long poll waits in the app, not on the socket).
        self.wsgi = eventlet.wsgi.Server(listener, listener.getsockname(), app, log=log,
                                         protocol=_with_prefix(protocol), keepalive=True,
                                         log_output=False, debug=False, socket_timeout=self.head_timeout_s)
        self.base_environ = self.wsgi.get_environ()
        self._accept_failures = 0
        self._next_failure_log = 0.0

    def serve_forever(self) -> None:
        raw = self.listener.fd
        fd = raw.fileno()
        while True:
            try:
                conn_fd, addr = raw._accept()
            except (BlockingIOError, InterruptedError):
                trampoline(fd, read=True)
                continue
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                self._log_accept_failure(exc)
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    eventlet.sleep(ACCEPT_BACKOFF_S)
                continue
            sock = _RawSocket(raw.family, raw.type, raw.proto, fileno=conn_fd)
            sock.setblocking(False)
            self.pool.spawn_n(self.handle, sock, addr)

    def _log_accept_failure(self, exc: OSError) -> None:
        self._accept_failures += 1
        now = time.monotonic()
        if now >= self._next_failure_log:
            failures = self._accept_failures
            log.warning("accept failed: %s (%d failure%s since the last report)", exc, failures,
                        "" if failures == 1 else "s")
            self._accept_failures = 0
            self._next_failure_log = now + ACCEPT_FAILURE_LOG_EVERY_S

    def handle(self, sock, addr) -> None:
        try:
            head = self._read_head(sock, self.head_timeout_s)
            if head is None:
                log.debug("connection from %s: no request head within %ss", addr, self.head_timeout_s)
            if not head:
                sock.close()
                return
            environ = upgrade_environ(head, self.base_environ)
            if environ is None:
                self._fall_back(sock, addr, head)
            else:
                self._upgrade(sock, addr, environ)
        except Exception:
            log.exception("connection from %s failed", addr)
            _close(sock)

    @staticmethod
    def _read_head(sock, timeout_s: float | None) -> bytes | None:
        """What the client sends until the end of its request head, LEAN_HEAD_LIMIT
        bytes, or the end of its input; None if that took longer than `timeout_s`."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        buf = b""
        while True:
            try:
                chunk = sock.recv(LEAN_HEAD_LIMIT)
            except (BlockingIOError, InterruptedError):
                if deadline is None:
                    trampoline(sock.fileno(), read=True)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    trampoline(sock.fileno(), read=True, timeout=left, timeout_exc=socket.timeout)
                except socket.timeout:
                    return None
                continue
            except OSError:
                return buf
            if not chunk:
                return buf
            buf += chunk
            if HEAD_END in buf or len(buf) >= LEAN_HEAD_LIMIT:
                return buf

    def _upgrade(self, sock, addr, environ: dict) -> None:
        host, port = sock.getsockname()[:2]
        environ["SERVER_NAME"], environ["SERVER_PORT"] = host, str(port)
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
        environ[wsconn.RAW_SOCKET] = sock
        answer: list = []

        def start_response(status, headers, exc_info=None):
            answer[:] = [status, headers]
            return _no_body_writes

        try:
            body = self.app(environ, start_response)
            try:
                data = b"".join(body)
            finally:
                getattr(body, "close", _noop)()
        except Exception:
            log.exception("websocket handshake failed")
            answer, data = ["500 Internal Server Error", [("Content-Type", "text/plain")]], b"internal error\n"
        if environ.get(wsconn.DETACHED):
            return   # edge.wsconn owns the socket now
        status, headers = answer or ("500 Internal Server Error", [])
        lines = [f"HTTP/1.1 {status}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        lines += [f"Content-Length: {len(data)}", "Connection: close", "", ""]
        green = greenio.GreenSocket(sock)
        try:
            green.sendall("\r\n".join(lines).encode("latin-1") + data)
        except OSError:
            pass
        _close(green)

    def _fall_back(self, sock, addr, head: bytes) -> None:
        green = greenio.GreenSocket(sock)
        green.settimeout(self.head_timeout_s)
        state = [addr, green, eventlet.wsgi.STATE_IDLE]
        try:
            self.wsgi.protocol(state, self.wsgi, head)
        except socket.timeout:
            pass
        finally:
            state[2] = eventlet.wsgi.STATE_CLOSE
            _close(green)


def _with_prefix(protocol):
    class PrefixedHttpProtocol(protocol):
        """`protocol`, reading first the bytes the accept loop already took."""

        def __init__(self, conn_state, server, prefix: bytes = b""):
            self.prefix = prefix
            super().__init__(conn_state, server)

        def setup(self):
            super().setup()
            if self.prefix:
                raw = _Prefixed(self.prefix, self.connection.makefile("rb", 0))
                self.rfile.close()
                self.rfile = io.BufferedReader(raw, self.rbufsize)
    return PrefixedHttpProtocol


def _close(sock) -> None:
    greenio.shutdown_safe(sock)
    try:
        sock.close()
    except OSError:
        pass


def _no_body_writes(data) -> None:
    raise RuntimeError("the edge's WebSocket handshake takes no write() body")


def _noop() -> None:
    pass
