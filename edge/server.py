"""Build the edge node's WSGI app and serve it on eventlet (default) or gevent."""
from __future__ import annotations

import logging
import socket
import sys

import redis
import socketio

from realtime.settings import SettingsError, get_settings

from . import gcpolicy, handlers, http1, stopping
from .node import EdgeNode

log = logging.getLogger("edge")

# Seconds the readiness probe waits for Redis before answering 503.
READYZ_REDIS_TIMEOUT_S = 1.0
# Per-connection HTTP buffers of the eventlet server (its defaults: 8 KB read, 16 KB write).
HTTP_READ_BUFFER = 2048
HTTP_WRITE_BUFFER = 2048
# Linux's TCP_DEFER_ACCEPT, seconds: how long the kernel keeps a connection that has sent
# nothing yet out of accept(). HTTP clients speak first; one that waits longer is still
# accepted once its bytes arrive.
DEFER_ACCEPT_S = 1


def build_app(node: EdgeNode):
    """The WSGI app: /healthz, /readyz, then Socket.IO."""
    sio_app = socketio.WSGIApp(node.sio, socketio_path="socket.io")
    probe = redis.Redis.from_url(node.settings.redis_url, socket_timeout=READYZ_REDIS_TIMEOUT_S,
                                 socket_connect_timeout=READYZ_REDIS_TIMEOUT_S)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            try:
                probe.ping()
            except redis.RedisError:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"redis unreachable\n"]
            if not node.sio.manager.listening:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"not subscribed to the fan-out channel yet\n"]
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ready\n"]
        # Refuse permessage-deflate: compressing every frame for every recipient
        # costs far more CPU and ~200 KB per connection than the bandwidth it saves
        # on small chat frames (see shared/PERFORMANCE-NOTES.md).
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return sio_app(environ, start_response)

    return app


def create_node() -> EdgeNode:
    settings = get_settings()
    settings.check_edge_safe()
    node = EdgeNode(settings)
    for module in handlers.MODULES:
        for spec in module.EVENTS:
            node.dispatcher.add(spec)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(node)
    node.dispatcher.register(node.sio)
    return node


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted sockets on Linux: small chat frames go out at once
    # instead of waiting for Nagle to merge them.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def serve(node: EdgeNode, app) -> None:
    s = node.settings
    if s.edge_async_mode == "gevent":
        from gevent.pool import Pool
        from gevent.pywsgi import WSGIHandler, WSGIServer

        head_timeout_s = s.edge_head_timeout_s or None

        class EdgeGeventHandler(WSGIHandler):
            # gevent's server waits forever for a request by default. Each read of a
            # request line and headers (idle keep-alive included) waits at most
            # EDGE_HEAD_TIMEOUT_S here; the app's own waits (a WebSocket's life, a long
            # poll) are not held to it.
            def handle_one_request(self):
                self.socket.settimeout(head_timeout_s)
                return super().handle_one_request()

            def run_application(self):
                self.socket.settimeout(None)
                return super().run_application()

            def _handle_client_error(self, ex):
                if isinstance(ex, socket.timeout):
                    return None   # headers that never finished: close, no traceback on stderr
                return super()._handle_client_error(ex)

        listener = _listen(s.edge_host, s.edge_port, s.edge_listen_backlog)
        server = WSGIServer(listener, app, spawn=Pool(s.edge_max_connections), log=None,
                            handler_class=EdgeGeventHandler)
        server.serve_forever()
    else:
        import eventlet
        import eventlet.wsgi

        from . import acceptor, wsconn

        class EdgeHttpProtocol(http1.FastRequestParsing, eventlet.wsgi.HttpProtocol):
            # eventlet allocates these buffers up front for every connection and keeps
            # them for its life (24 KB); a WebSocket never uses them after the
            # handshake, and polling requests/responses are small.
            rbufsize = HTTP_READ_BUFFER
            wbufsize = HTTP_WRITE_BUFFER

            def finish(self):
                if not getattr(self, "environ", {}).get(wsconn.DETACHED):
                    return super().finish()
                # edge.wsconn owns a dup of this socket now: close eventlet's
                # descriptor (its files first: they hold it open) without shutting
                # the connection down, so that the server's own clean-up, which
                # shuts down what it closes, finds it closed already.
                for f in (self.wfile, self.rfile):
                    try:
                        f.close()
                    except OSError:
                        pass
                self.connection.close()

        listener = eventlet.listen((s.edge_host, s.edge_port), backlog=s.edge_listen_backlog)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            # accept() once the client's first bytes (its request head) are in: no read that
            # finds nothing and waits on the hub per connection (about four syscalls).
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
        if s.fast_broadcast_enabled:
            # WebSocket handshakes answered by the accept loop itself, the socket handed
            # to edge.wsconn; the rest goes to eventlet's server (edge.acceptor).
            acceptor.EdgeHttpServer(listener, app, protocol=EdgeHttpProtocol,
                                    max_size=s.edge_max_connections,
                                    head_timeout_s=s.edge_head_timeout_s).serve_forever()
        else:
            # Stock python-engineio: its websocket needs eventlet's request to live on.
            # debug=False: an app error is a bare 500, not a traceback sent to the client.
            eventlet.wsgi.server(listener, app, max_size=s.edge_max_connections, log_output=False,
                                 socket_timeout=None, keepalive=True, protocol=EdgeHttpProtocol,
                                 debug=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    try:
        node = create_node()
    except SettingsError as exc:
        log.error("refusing to start: %s", exc)
        sys.exit(2)
    app = build_app(node)
    node.start()
    log.info("edge node %s listening on %s:%d (%s)", node.node_id, node.settings.edge_host,
             node.settings.edge_port, node.settings.edge_async_mode)
    stopping.install(node.settings.edge_async_mode)
    gcpolicy.apply(node.settings)   # last: what is alive now lives as long as the process
    serve(node, app)
