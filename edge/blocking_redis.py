"""A Redis client whose pool waits for a free connection instead of failing.

redis-py's default pool raises MaxConnectionsError once 100 commands are in
flight; an edge node under a burst of events (2,000 message_read/s) has more
handlers waiting on Redis than that, and they were answered `unavailable`.
Handlers of the hot, Redis-only events (typing, reads) use this client: a burst
queues for a connection for at most the socket timeout.
"""
from __future__ import annotations

import dataclasses

import redis

from realtime.actions.context import Context
from realtime.redis_client import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S

MAX_CONNECTIONS = 256


def blocking_context(node) -> Context:
    """The node's action context with a blocking-pool Redis client (one per node)."""
    ctx = getattr(node, "_blocking_ctx", None)
    if ctx is None:
        pool = redis.BlockingConnectionPool.from_url(
            node.settings.redis_url, max_connections=MAX_CONNECTIONS, timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_keepalive=True, decode_responses=True)
        ctx = dataclasses.replace(node.ctx, redis=redis.Redis(connection_pool=pool))
        node._blocking_ctx = ctx
    return ctx
