"""The edge node: one Socket.IO server, its sessions, and the node-wide loops
(auth deadlines, revocation listener)."""
from __future__ import annotations

import logging
from typing import Any

import engineio
import redis
import socketio

from realtime import auth, connections, db, envelope, keys, pubsub, timeutil
from realtime.actions.context import Actor, Context
from realtime.errors import AUTH_REVOKED, ApiError
from realtime.redis_client import make_redis
from realtime.settings import Settings

from .deadlines import DeadlineLoop
from .disconnects import DisconnectBatcher
from .dispatch import Dispatcher
from .fanout import make_manager
from .registry import RegistryWriter
from .sessions import SessionRegistry, SocketSession
from . import wirejson

log = logging.getLogger(__name__)

# Engine.IO accepts packets up to this size so that an oversize event can be
# answered `too_large` (PROTOCOL §11) instead of closing the socket; only far
# larger packets (abuse) drop the connection.
ENGINEIO_MAX_BUFFER_BYTES = 1024 * 1024
# Delay before retrying the revocation subscription after a Redis failure.
REVOCATION_RETRY_S = 1.0
# The node heartbeat (realtime.connections) is written this many times per
# PRESENCE_NODE_TIMEOUT_S, so one or two late beats never make a live node look dead.
HEARTBEATS_PER_NODE_TIMEOUT = 4


def _refused(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A refused CONNECT, with the error the client reads in `connect_error`."""
    return socketio.exceptions.ConnectionRefusedError(message, {"code": code, "message": message})


class _EngineIOServer(engineio.Server):
    """Engine.IO sids start with the node id (`edge1.xxxx`) so that a load
    balancer can route every later request of a session to the node that owns
    it, which long-polling needs."""

    node_id = ""
    fast_broadcast = False
    ws_max_buffered_bytes = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.fast_broadcast:
            from . import wsconn
            from .fastpath import install_ping_wheel
            wsconn.install(self, self.ws_max_buffered_bytes)
            install_ping_wheel(self)

    def generate_id(self):
        return f"{self.node_id}.{super().generate_id()}"


class _SocketIOServer(socketio.Server):
    # Called with (eio_sid, namespace) right after a CONNECT was answered (accepted or
    # refused), in the same greenthread: what it sends follows the CONNECT packet.
    after_connect = None

    def __init__(self, node_id: str, fast_broadcast: bool = False, ws_max_buffered_bytes: int = 0,
                 **kwargs):
        self._node_id = node_id
        self._fast_broadcast = fast_broadcast
        self._ws_max_buffered_bytes = ws_max_buffered_bytes
        super().__init__(**kwargs)

    def _handle_connect(self, eio_sid, namespace, data):
        super()._handle_connect(eio_sid, namespace, data)
        if self.after_connect is not None:
            try:
                self.after_connect(eio_sid, namespace or "/")
            except Exception:
                log.exception("after-connect hook failed for %s", eio_sid)

    def _engineio_server_class(self):
        node_id = self._node_id
        fast = self._fast_broadcast

        class NodeEngineIOServer(_EngineIOServer):
            pass

        NodeEngineIOServer.node_id = node_id
        NodeEngineIOServer.fast_broadcast = fast
        NodeEngineIOServer.ws_max_buffered_bytes = self._ws_max_buffered_bytes
        return NodeEngineIOServer


class EdgeNode:
    def __init__(self, settings: Settings, *, clock=timeutil.now):
        self.settings = settings
        self.clock = clock
        self.node_id = settings.edge_node_id
        self.redis = make_redis(settings)
        self.sessions = SessionRegistry()
        manager = make_manager(settings.redis_url, settings.socketio_channel,
                               fast_broadcast=settings.fast_broadcast_enabled,
                               rooms_routing=settings.fanout_rooms, node_id=self.node_id,
                               redis_options={"socket_connect_timeout": 2})
        cors: Any = list(settings.cors_allowed_origins) or None
        if cors == ["*"]:
            cors = "*"
        self.sio = _SocketIOServer(
            self.node_id,
            fast_broadcast=settings.fast_broadcast_enabled,
            ws_max_buffered_bytes=settings.edge_ws_max_buffered_bytes,
            async_mode=settings.edge_async_mode,
            client_manager=manager,
            # Handlers of one socket run one after another, in the order sent
            # (PROTOCOL §3); different sockets still run concurrently.
            async_handlers=False,
            cors_allowed_origins=cors,
            max_http_buffer_size=ENGINEIO_MAX_BUFFER_BYTES,
            ping_interval=25,
            ping_timeout=20,
            logger=False,
            engineio_logger=False,
            # orjson for every packet and fan-out message (edge.wirejson); with the fast
            # path off the edge stays stock python-socketio, the benchmark's baseline.
            json=wirejson if settings.fast_broadcast_enabled else None,
        )
        self.registry = RegistryWriter(self.redis, spawn=self.sio.start_background_task,
                                       make_event=self.sio.eio.create_event,
                                       yield_=lambda: self.sio.sleep(0))
        self.ctx = Context(settings=settings, redis=self.redis, emit=self._emit,
                           source=envelope.source_id("edge", self.node_id), clock=clock)
        self.deadlines = DeadlineLoop(clock=clock, sleep=self.sio.sleep)
        self.deadlines.on("auth_grace", self._on_auth_grace)
        self.deadlines.on("token_expiry", self._on_token_expiry)
        self.dispatcher = Dispatcher(self)
        # Extension points for features that react to socket lifecycle events
        # (presence, typing, calls): hook(node, session).
        # A closed socket: on_disconnect_hooks run at once, in its disconnect handler,
        # and must not wait on I/O (presence buffers in memory). Redis work goes in
        # on_disconnect_batch_hooks, hook(node, sessions), which edge.disconnects runs
        # for the authenticated sockets that closed, a batch at a time.
        self.on_disconnect_hooks: list = []
        self.on_disconnect_batch_hooks: list = []
        self.disconnects = DisconnectBatcher(self, self.on_disconnect_batch_hooks,
                                             spawn=self.sio.start_background_task, sleep=self.sio.sleep)
        # hook(node, session) once a socket is first authenticated and registered.
        self.on_authenticated_hooks: list = []
        # hook(node, session, message) after a message_send, the wire message stored
        # (or found again, for a retry) and emitted; before the ack.
        self.after_send_hooks: list = []
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.after_connect = self._after_connect

    # --- plumbing -----------------------------------------------------------------
    def _emit(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
        self.sio.emit(event, data, room=room, skip_sid=skip_sid)

    def start_background(self, fn, *args, **kwargs):
        return self.sio.start_background_task(fn, *args, **kwargs)

    def actor(self, session: SocketSession) -> Actor:
        return Actor(user_id=session.user_id, sid=session.sid, device_id=session.device_id)

    def start(self) -> None:
        db.connect(self.settings)
        # python-socketio subscribes to the fan-out channel at the first connect, in
        # the background: the first sockets of a fresh node could miss what other
        # nodes sent them meanwhile. Subscribe now; /readyz waits for it.
        self.sio.manager_initialized = True
        self.sio.manager.initialize()
        self.start_background(self.deadlines.run_forever)
        self.start_background(self._revocation_listener)
        self.start_background(self._heartbeat_loop)

    def _heartbeat_loop(self) -> None:
        interval = max(0.25, self.settings.presence_node_timeout_s / HEARTBEATS_PER_NODE_TIMEOUT)
        # A connection of its own: in a storm of thousands of disconnects the shared pool
        # runs dry, and a missed beat gets a live node settled as dead by the sweep.
        beat_redis = make_redis(self.settings, max_connections=1)
        while True:
            try:
                connections.heartbeat(beat_redis, self.node_id, self.clock())
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self.sio.sleep(interval)

    def save_connection(self, session: SocketSession) -> None:
        """Publish where this socket is and which conversations it joined."""
        self.registry.save(connections.Connection(
            sid=session.sid, user_id=session.user_id, device_id=session.device_id, node_id=self.node_id,
            connected_at=session.connected_at, conversations=sorted(session.conversations)))

    # --- connection lifecycle ---------------------------------------------------
    def _on_connect(self, sid: str, environ: dict, auth_data: Any = None):
        session = SocketSession(sid=sid, connected_at=self.clock())
        token = auth_data.get("token") if isinstance(auth_data, dict) else None
        device_hint = auth_data.get("device_id") if isinstance(auth_data, dict) else None
        if token is None:
            # Authenticate-after-connect: the client has AUTH_GRACE_S to send
            # `authenticate`; other events get `unauthenticated` meanwhile.
            self.sessions.add(session)
            self.deadlines.schedule(session.connected_at + self.settings.auth_grace_s, "auth_grace", sid)
            return True
        try:
            identity = self._verify(token)
        except ApiError as exc:
            raise _refused(exc.code, exc.message) from None
        except redis.RedisError:
            raise _refused("unavailable", "service unavailable") from None
        self.sessions.add(session)
        try:
            self._bind(session, identity, device_hint)
        except redis.RedisError:
            # The registry write or the user room's channel failed (_register): nothing
            # stayed bound.
            self.sessions.remove(sid)
            raise _refused("unavailable", "service unavailable") from None
        return True   # then _after_connect announces it, right after the CONNECT packet

    def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self.sessions.remove(sid)
        if session is None:
            return
        if session.authenticated:
            try:
                # Before any hook: they ask whether the user or device has another socket.
                self.registry.remove(sid, session.user_id, self.node_id)
            except redis.RedisError as exc:
                # Left for the node sweep, which settles entries of sockets gone.
                log.warning("could not unregister %s: %s", sid, exc)
        for hook in self.on_disconnect_hooks:
            try:
                hook(self, session)
            except Exception:
                log.exception("disconnect hook failed for %s", sid)
        if session.authenticated:
            self.disconnects.submit(session)

    def _verify(self, token: Any) -> auth.Identity:
        identity = auth.verify(token, self.settings)
        if identity.session_id and self.redis.exists(keys.revoked_session(identity.session_id)):
            raise ApiError(AUTH_REVOKED, "session revoked")
        return identity

    def _bind(self, session: SocketSession, identity: auth.Identity, device_hint: Any) -> None:
        if not session.authenticated:
            if identity.device_id:
                device_id = identity.device_id
            elif isinstance(device_hint, str) and 0 < len(device_hint) <= 128:
                device_id = device_hint
            else:
                device_id = session.sid
            self._register(session, identity.user_id, device_id)
            for hook in self.on_authenticated_hooks:
                try:
                    hook(self, session)
                except Exception:
                    log.exception("authenticated hook failed for %s", session.sid)
        session.expires_at = identity.expires_at
        self.sessions.bind_auth_session(session, identity.session_id)
        self.deadlines.schedule(identity.expires_at, "token_expiry", session.sid)

    def _register(self, session: SocketSession, user_id: str, device_id: str) -> None:
        """Bind the socket to its user: the user's room (whose channel this node must read
        before the CONNECT or `authenticated` goes out, edge.fanout) and the registry entry.
        The two Redis round trips overlap. If either fails (a RedisError), neither stays and
        the session is unbound again."""
        room = keys.user_room(user_id)
        confirm_room = self.sio.manager.enter_room_then_confirm(session.sid, "/", room)
        session.user_id, session.device_id = user_id, device_id
        try:
            self.save_connection(session)
        except redis.RedisError:
            self.sio.leave_room(session.sid, room)
            session.user_id = session.device_id = None
            raise
        try:
            confirm_room()
        except redis.RedisError:
            try:
                self.registry.remove(session.sid, user_id, self.node_id)
            except redis.RedisError:
                pass   # the node's reconcile removes entries of sockets gone
            session.user_id = session.device_id = None
            raise

    def authenticated_payload(self, session: SocketSession) -> dict:
        return {
            "user_id": session.user_id,
            "session_id": session.session_id,
            "device_id": session.device_id,
            "expires_at": timeutil.iso(session.expires_at),
        }

    def _after_connect(self, eio_sid: str, namespace: str) -> None:
        """`authenticated` for a socket that authenticated in its CONNECT, sent in the
        same pass of the hub as the CONNECT packet: one write to the client, and no
        greenthread of its own."""
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, namespace)
        session = self.sessions.get(sid) if sid is not None else None
        if session is not None and session.authenticated:
            self.sio.emit("authenticated", self.authenticated_payload(session), to=sid)

    def authenticate(self, session: SocketSession, token: Any, device_hint: Any = None) -> dict:
        """The `authenticate` event: first authentication or a token refresh."""
        identity = self._verify(token)
        if session.authenticated and identity.user_id != session.user_id:
            raise ApiError("forbidden", "token is for another user; the socket stays bound")
        self._bind(session, identity, device_hint)
        payload = self.authenticated_payload(session)
        self.sio.emit("authenticated", payload, to=session.sid)
        return payload

    # --- deadlines ---------------------------------------------------------------------
    def _on_auth_grace(self, sid: str, now: float) -> None:
        session = self.sessions.get(sid)
        if session is not None and not session.authenticated:
            log.info("disconnecting %s: not authenticated within %.1fs", sid, self.settings.auth_grace_s)
            self.sio.disconnect(sid)

    def _on_token_expiry(self, sid: str, now: float) -> None:
        session = self.sessions.get(sid)
        # Re-check: a refresh moved the deadline and left this entry stale.
        if session is None or session.expires_at is None or session.expires_at > now:
            return
        self.sio.emit("auth_expired", {}, to=sid)
        self.sio.disconnect(sid)

    # --- revocation --------------------------------------------------------------------
    def _revocation_listener(self) -> None:
        pubsub.listen_forever(self.settings, keys.REVOCATION_CHANNEL, lambda data: self.revoke(str(data)),
                              self.sio.sleep, REVOCATION_RETRY_S)

    def revoke(self, auth_session_id: str) -> None:
        for sid in self.sessions.sids_of_auth_session(auth_session_id):
            self.sio.emit("session_revoked", {"session_id": auth_session_id}, to=sid)
            self.sio.disconnect(sid)


