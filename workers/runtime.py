"""Per-process resources of a worker: settings, Redis, MongoDB, the emitter."""
from __future__ import annotations

import functools
import os
import socket
from typing import Any

from realtime import db, envelope
from realtime.fanout import RoutedRedisManager
from realtime.actions.context import Context
from realtime.redis_client import get_redis
from realtime.settings import get_settings


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@functools.lru_cache(maxsize=1)
def emitter() -> RoutedRedisManager:
    """Write-only Socket.IO manager: publishes emits for the edge nodes to deliver,
    each on the channel realtime.fanout routes it to."""
    settings = get_settings()
    return RoutedRedisManager(settings.redis_url, settings.socketio_channel, routing=settings.fanout_rooms,
                              redis_options={"socket_connect_timeout": 2, "socket_timeout": 3})


def _emit(event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
    emitter().emit(event, data, room=room, skip_sid=skip_sid, namespace="/")


@functools.lru_cache(maxsize=1)
def context() -> Context:
    settings = get_settings()
    db.connect(settings)
    return Context(settings=settings, redis=get_redis(), emit=_emit,
                   source=envelope.source_id("worker", worker_name()))
