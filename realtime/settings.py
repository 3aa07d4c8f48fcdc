"""Settings read from the environment (PROTOCOL §12), shared by every process.

One frozen `Settings` object per process, built by `get_settings()`. Tests and
tools that need other values build their own with `Settings.from_env(env)`.
"""
from __future__ import annotations

import functools
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Mapping

DEV_JWT_SECRET = "dev-secret-do-not-use-in-production"


# FANOUT_ROUTING values (realtime/fanout.py).
FANOUT_ROUTING_MODES = ("rooms", "broadcast")


class SettingsError(RuntimeError):
    """The configuration is unsafe or inconsistent; the process must not start."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _public_keys(raw: str | None) -> dict[str, str]:
    """JWT_PUBLIC_KEYS: a JSON object {kid: PEM}, a path to such a JSON file, or one PEM.

    A single PEM (inline or a path to a .pem file) is stored under the kid "" and is
    used for tokens without a `kid` header.
    """
    if not raw or not raw.strip():
        return {}
    text = raw.strip()
    if not text.startswith(("{", "-----")) and os.path.exists(text):
        with open(text, encoding="utf-8") as fh:
            text = fh.read().strip()
    if text.startswith("-----"):
        return {"": text}
    try:
        keys = json.loads(text)
    except ValueError as exc:
        raise SettingsError("JWT_PUBLIC_KEYS must be JSON {kid: PEM}, a PEM, or a path") from exc
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise SettingsError("JWT_PUBLIC_KEYS must map key ids to PEM strings")
    return {str(k): v for k, v in keys.items()}


@dataclass(frozen=True)
class Settings:
    # Backing services
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "chat."
    mongo_url: str = "mongodb://127.0.0.1:27017/realtime"
    # Redis connections per process (realtime.redis_client). redis-py's plain pool
    # refuses the 101st concurrent caller ("Too many connections"), which a connect
    # storm on an edge node (hundreds of greenthreads each registering a socket)
    # reached at once; the blocking pool makes a caller wait for a free connection
    # instead, at most redis_pool_wait_s (then `No connection available`).
    redis_max_connections: int = 256
    redis_pool_wait_s: float = 3.0

    # Auth (PROTOCOL §2)
    dev_mode: bool = False
    jwt_secret: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_public_keys: dict[str, str] = field(default_factory=dict)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Leeway for clock skew between the auth service and this layer.
    jwt_leeway_s: float = 5.0

    # Timings (PROTOCOL §12), seconds
    auth_grace_s: float = 10.0
    presence_offline_grace_s: float = 10.0
    presence_node_timeout_s: float = 20.0
    typing_expiry_s: float = 10.0
    receipt_window_s: float = 1.0
    push_coalesce_s: float = 1.0
    call_ring_timeout_s: float = 45.0
    call_reconnect_grace_s: float = 15.0

    # Calls
    turn_secret: str | None = None
    turn_urls: tuple[str, ...] = ()
    stun_urls: tuple[str, ...] = ()
    turn_ttl_s: int = 3600

    # Limits (PROTOCOL §11)
    max_packet_bytes: int = 64 * 1024
    max_body_chars: int = 16384
    max_sdp_bytes: int = 32 * 1024
    max_rooms_per_socket: int = 500
    max_presence_subscriptions: int = 1000
    # Over this many rate_limited answers within abuse_window_s the socket is dropped.
    abuse_rate_limited_max: int = 100
    abuse_window_s: float = 10.0

    # Edge node
    edge_port: int = 5001
    edge_host: str = "127.0.0.1"
    edge_node_id: str = ""
    edge_async_mode: str = "eventlet"
    # eventlet's defaults are 1,024 connections per process and a listen backlog
    # of 50; a chat edge holds tens of thousands of mostly idle sockets.
    edge_max_connections: int = 100_000
    edge_listen_backlog: int = 4096
    # How long a connection may take to send its request head, and the longest any
    # read or write of a plain HTTP exchange (polling, probes) may wait, idle
    # keep-alive included. Without it, connections that send half a head, or nothing,
    # would each hold a descriptor and a pooled greenlet for good: a few thousand
    # of them and the node accepts no one else.
    edge_head_timeout_s: float = 20.0
    cors_allowed_origins: tuple[str, ...] = ()
    # Channel of the Socket.IO Redis manager (cross-node fan-out).
    socketio_channel: str = "socketio"

    # Celery / Flower
    flower_basic_auth: str | None = None

    # Push providers (PROTOCOL §8). Endpoints are base URLs so tests can point
    # them at local servers.
    webpush_vapid_private_key: str | None = None
    webpush_vapid_public_key: str | None = None
    webpush_vapid_subject: str = "mailto:push@example.invalid"
    fcm_project_id: str | None = None
    fcm_credentials_file: str | None = None
    fcm_endpoint: str = "https://fcm.googleapis.com"
    fcm_token_url: str = "https://oauth2.googleapis.com/token"
    apns_key_file: str | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    apns_endpoint: str = "https://api.push.apple.com"

    # Edge fast path (edge/fastpath.py): a broadcast's WebSocket frame is built once
    # and written straight to each recipient's socket. "auto" = on where it is
    # proven (eventlet), off elsewhere; "on" / "off" force it.
    edge_fast_broadcast: str = "auto"
    # With the fast path's websocket transport (edge/wsconn.py): a client that lets
    # this many bytes of output pile up unread is disconnected (`transport error`)
    # instead of growing the node's memory without bound.
    edge_ws_max_buffered_bytes: int = 8 * 1024 * 1024
    # CPython's garbage collector in an edge process (edge/gcpolicy.py): the young
    # generation's threshold (0 keeps Python's 700), the middle generation's (young
    # collections between two of its collections; 0 keeps Python's 10) and whether the
    # objects alive at start are frozen out of every later collection.
    edge_gc_young_threshold: int = 10_000
    edge_gc_middle_threshold: int = 1
    edge_gc_freeze: bool = True
    # How emits travel between nodes and workers (realtime/fanout.py): "rooms" puts an
    # emit to a user's or a conversation's room on that room's channel, read only by the
    # nodes with a member in it; "broadcast" puts every emit on the one channel every
    # node reads (python-socketio's stock behaviour; needed while any node is older).
    fanout_routing: str = "rooms"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        port = _int(env, "EDGE_PORT", 5001)
        redis_max_connections = _int(env, "REDIS_MAX_CONNECTIONS", cls.redis_max_connections)
        if redis_max_connections < 1:
            raise SettingsError("REDIS_MAX_CONNECTIONS must be at least 1")
        # Read by edge nodes and workers alike: a typo must not leave them disagreeing.
        fanout_routing = (env.get("FANOUT_ROUTING") or cls.fanout_routing).strip().lower()
        if fanout_routing not in FANOUT_ROUTING_MODES:
            raise SettingsError(f"FANOUT_ROUTING must be one of {', '.join(FANOUT_ROUTING_MODES)}")
        return cls(
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP") or cls.kafka_bootstrap,
            kafka_topic_prefix=env.get("KAFKA_TOPIC_PREFIX", cls.kafka_topic_prefix),
            mongo_url=env.get("MONGO_URL") or cls.mongo_url,
            redis_max_connections=redis_max_connections,
            redis_pool_wait_s=_float(env, "REDIS_POOL_WAIT_S", cls.redis_pool_wait_s),
            dev_mode=_flag(env.get("DEV_MODE")),
            jwt_secret=env.get("JWT_SECRET") or None,
            jwt_algorithms=_csv(env.get("JWT_ALGORITHMS")) or ("HS256",),
            jwt_public_keys=_public_keys(env.get("JWT_PUBLIC_KEYS")),
            jwt_audience=env.get("JWT_AUDIENCE") or None,
            jwt_issuer=env.get("JWT_ISSUER") or None,
            auth_grace_s=_float(env, "AUTH_GRACE_S", 10.0),
            presence_offline_grace_s=_float(env, "PRESENCE_OFFLINE_GRACE_S", 10.0),
            presence_node_timeout_s=_float(env, "PRESENCE_NODE_TIMEOUT_S", 20.0),
            typing_expiry_s=_float(env, "TYPING_EXPIRY_S", 10.0),
            receipt_window_s=_float(env, "RECEIPT_WINDOW_S", 1.0),
            push_coalesce_s=_float(env, "PUSH_COALESCE_S", 1.0),
            call_ring_timeout_s=_float(env, "CALL_RING_TIMEOUT_S", 45.0),
            call_reconnect_grace_s=_float(env, "CALL_RECONNECT_GRACE_S", 15.0),
            turn_secret=env.get("TURN_SECRET") or None,
            turn_urls=_csv(env.get("TURN_URLS")),
            stun_urls=_csv(env.get("STUN_URLS")),
            turn_ttl_s=_int(env, "TURN_TTL_S", 3600),
            max_packet_bytes=_int(env, "LIMIT_PACKET_BYTES", 64 * 1024),
            edge_port=port,
            edge_host=env.get("EDGE_HOST") or "127.0.0.1",
            edge_node_id=env.get("EDGE_NODE_ID") or f"edge-{socket.gethostname()}-{port}",
            edge_async_mode=(env.get("EDGE_ASYNC_MODE") or "eventlet").lower(),
            edge_max_connections=_int(env, "EDGE_MAX_CONNECTIONS", 100_000),
            edge_listen_backlog=_int(env, "EDGE_LISTEN_BACKLOG", 4096),
            edge_head_timeout_s=_float(env, "EDGE_HEAD_TIMEOUT_S", cls.edge_head_timeout_s),
            cors_allowed_origins=_csv(env.get("CORS_ALLOWED_ORIGINS")),
            socketio_channel=env.get("EDGE_SOCKETIO_CHANNEL") or "socketio",
            flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
            webpush_vapid_private_key=env.get("WEBPUSH_VAPID_PRIVATE_KEY") or None,
            webpush_vapid_public_key=env.get("WEBPUSH_VAPID_PUBLIC_KEY") or None,
            webpush_vapid_subject=env.get("WEBPUSH_VAPID_SUBJECT") or cls.webpush_vapid_subject,
            fcm_project_id=env.get("FCM_PROJECT_ID") or None,
            fcm_credentials_file=env.get("FCM_CREDENTIALS_FILE") or None,
            fcm_endpoint=(env.get("FCM_ENDPOINT") or cls.fcm_endpoint).rstrip("/"),
            fcm_token_url=env.get("FCM_TOKEN_URL") or cls.fcm_token_url,
            apns_key_file=env.get("APNS_KEY_FILE") or None,
            apns_key_id=env.get("APNS_KEY_ID") or None,
            apns_team_id=env.get("APNS_TEAM_ID") or None,
            apns_topic=env.get("APNS_TOPIC") or None,
            apns_endpoint=(env.get("APNS_ENDPOINT") or cls.apns_endpoint).rstrip("/"),
            edge_fast_broadcast=(env.get("EDGE_FAST_BROADCAST") or "auto").strip().lower(),
            edge_ws_max_buffered_bytes=_int(env, "EDGE_WS_MAX_BUFFERED_BYTES", cls.edge_ws_max_buffered_bytes),
            edge_gc_young_threshold=_int(env, "EDGE_GC_YOUNG_THRESHOLD", cls.edge_gc_young_threshold),
            edge_gc_middle_threshold=_int(env, "EDGE_GC_MIDDLE_THRESHOLD", cls.edge_gc_middle_threshold),
            edge_gc_freeze=_flag(env.get("EDGE_GC_FREEZE", "1")),
            fanout_routing=fanout_routing,
        )

    @property
    def fast_broadcast_enabled(self) -> bool:
        mode = self.edge_fast_broadcast
        if mode in {"1", "on", "true", "yes"}:
            return self.edge_async_mode == "eventlet"  # the only mode it is built for
        if mode in {"0", "off", "false", "no"}:
            return False
        return self.edge_async_mode == "eventlet"

    @property
    def fanout_rooms(self) -> bool:
        """Whether emits to user and conversation rooms go on per-room channels."""
        return self.fanout_routing != "broadcast"

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a short name such as 'messages'."""
        return f"{self.kafka_topic_prefix}{name}"

    def check_edge_safe(self) -> None:
        """Refuse settings that must never reach production (PROTOCOL §12)."""
        if self.edge_async_mode not in {"eventlet", "gevent"}:
            raise SettingsError("EDGE_ASYNC_MODE must be 'eventlet' or 'gevent'")
        uses_hmac = any(alg.startswith("HS") for alg in self.jwt_algorithms)
        if "none" in {a.lower() for a in self.jwt_algorithms}:
            raise SettingsError("JWT_ALGORITHMS must not contain 'none'")
        if uses_hmac and not self.jwt_secret:
            raise SettingsError("JWT_SECRET is required for HS* algorithms")
        if not self.dev_mode and self.jwt_secret == DEV_JWT_SECRET:
            raise SettingsError("the dev JWT secret is refused when DEV_MODE is off")
        if any(not alg.startswith("HS") for alg in self.jwt_algorithms) and not self.jwt_public_keys:
            raise SettingsError("JWT_PUBLIC_KEYS is required for RS*/ES* algorithms")


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


# Presence: changes of one user inside this window are announced once, with the
# latest state (PRESENCE_COALESCE_S, seconds). Read here rather than in Settings
# so the shared dataclass keeps its field order for the other features.
def presence_coalesce_s(env: Mapping[str, str] | None = None) -> float:
    return _float(os.environ if env is None else env, "PRESENCE_COALESCE_S", 1.0)
