"""Redis connections with timeouts on every call (a hung Redis must not hang a handler)."""
from __future__ import annotations

import functools
import select
import socket

import redis

from .settings import Settings, get_settings

# Seconds; a Redis that does not answer within these is treated as down
# (`unavailable`), never waited on forever.
REDIS_CONNECT_TIMEOUT_S = 2.0
REDIS_SOCKET_TIMEOUT_S = 3.0


def _install_peek_readiness_check() -> None:
    """redis-py checks each pooled connection for unread data before every command
    (`can_read(timeout=0)`). Under eventlet, which removes `select.poll`, that check
    is a green selector: a greenthread switch through the hub and a timer, about a
    tenth of an edge node's CPU in a connect storm. A non-blocking MSG_PEEK answers
    the same question without leaving the greenthread. Other timeouts, TLS sockets
    and hosts with poll() keep redis-py's own check."""
    try:
        from redis._parsers import hiredis as parser_module
    except ImportError:  # pragma: no cover - another redis-py layout
        return
    original = getattr(parser_module, "_socket_can_read", None)
    if original is None or getattr(original, "peek_check", False) or hasattr(select, "poll"):
        return

    def can_read(sock, timeout):
        raw = getattr(sock, "fd", None)  # eventlet's GreenSocket wraps the real socket
        if timeout != 0 or raw is None or hasattr(sock, "pending"):
            return original(sock, timeout)
        try:
            raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True  # readable as an error: the caller reconnects
        return True  # pending data, or EOF

    can_read.peek_check = True
    parser_module._socket_can_read = can_read


def make_redis(settings: Settings, **overrides) -> redis.Redis:
    _install_peek_readiness_check()
    options = dict(
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_keepalive=True,
        retry_on_timeout=False,
        decode_responses=True,
    )
    options.update(overrides)
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=options.pop("max_connections", settings.redis_max_connections),
        timeout=options.pop("pool_wait_s", settings.redis_pool_wait_s), **options)
    return redis.Redis(connection_pool=pool)


@functools.lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    return make_redis(get_settings())


_scripts: dict[tuple[int, str], object] = {}


def script(r: redis.Redis, source: str):
    """A Lua script registered once per client (EVALSHA after the first call)."""
    key = (id(r), source)
    found = _scripts.get(key)
    if found is None:
        found = _scripts[key] = r.register_script(source)
    return found
