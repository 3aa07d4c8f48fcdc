"""Every client event goes through `Dispatcher.handle`: size limit, authentication,
rate limit, validation and error mapping happen here once, so that handlers only
validate their own fields and call an action.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import orjson
import redis

from realtime import ratelimit
from realtime.db import DB_DOWN_ERRORS
from realtime.errors import (
    INTERNAL,
    INVALID_PAYLOAD,
    RATE_LIMITED,
    TOO_LARGE,
    UNAUTHENTICATED,
    UNAVAILABLE,
    ApiError,
)

if TYPE_CHECKING:
    from .node import EdgeNode
    from .sessions import SocketSession

log = logging.getLogger(__name__)

Handler = Callable[["EdgeNode", "SocketSession", dict], dict]


@dataclass(frozen=True)
class EventSpec:
    name: str
    handler: Handler
    requires_auth: bool = True


def error_ack(code: str, message: str) -> dict:
    return {"ok": False, "error": {"code": code, "message": message}}


def _packet_size(args: tuple) -> int:
    """Size of the event's arguments as JSON; bytes attachments count as their length."""
    try:
        return len(orjson.dumps(args))
    except TypeError:
        return sum(len(a) if isinstance(a, (bytes, bytearray)) else len(orjson.dumps(a, default=str))
                   for a in args)


class Dispatcher:
    def __init__(self, node: "EdgeNode"):
        self.node = node
        self.specs: dict[str, EventSpec] = {}

    def add(self, spec: EventSpec) -> None:
        self.specs[spec.name] = spec

    def register(self, sio) -> None:
        for name in self.specs:
            sio.on(name, self._bound(name))
        sio.on("*", self._unknown)

    def _bound(self, name: str):
        def on_event(sid: str, *args: Any) -> dict:
            return self.handle(name, sid, args)
        return on_event

    def _unknown(self, event: str, sid: str, *args: Any) -> dict:
        return self.handle(event, sid, args)

    def handle(self, event: str, sid: str, args: tuple) -> dict:
        session = self.node.sessions.get(sid)
        if session is None:
            return error_ack(UNAUTHENTICATED, "socket is not connected")
        if _packet_size(args) > self.node.settings.max_packet_bytes:
            return error_ack(TOO_LARGE, f"packet over {self.node.settings.max_packet_bytes} bytes")
        spec = self.specs.get(event)
        if spec is not None and spec.requires_auth and not session.authenticated:
            return error_ack(UNAUTHENTICATED, "authenticate first")
        if not self._take_token(session, event if spec else "*unknown"):
            return error_ack(RATE_LIMITED, f"too many {event} events")
        if spec is None:
            return error_ack(INVALID_PAYLOAD, f"unknown event {event!r}")
        if len(args) > 1:
            return error_ack(INVALID_PAYLOAD, "an event takes one payload object")
        data = args[0] if args else None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return error_ack(INVALID_PAYLOAD, "payload must be an object")
        try:
            result = spec.handler(self.node, session, data)
        except ApiError as exc:
            return exc.to_ack()
        except DB_DOWN_ERRORS:
            log.warning("%s: database unavailable", event)
            return error_ack(UNAVAILABLE, "database unavailable")
        except redis.RedisError:
            log.warning("%s: redis unavailable", event)
            return error_ack(UNAVAILABLE, "redis unavailable")
        except Exception:
            log.exception("%s failed", event)
            return error_ack(INTERNAL, "internal error")
        out = {"ok": True}
        if result:
            out.update(result)
        return out

    def _take_token(self, session: "SocketSession", bucket_name: str) -> bool:
        now = self.node.clock()
        allowed, bucket = ratelimit.take(session.buckets.get(bucket_name), now,
                                         ratelimit.rate_for(bucket_name))
        session.buckets[bucket_name] = bucket
        if allowed:
            return True
        settings = self.node.settings
        session.rate_limited_at = ratelimit.count_recent(session.rate_limited_at, now, settings.abuse_window_s)
        session.rate_limited_at.append(now)
        if len(session.rate_limited_at) > settings.abuse_rate_limited_max and not session.dropping:
            session.dropping = True
            log.warning("disconnecting %s (user %s): sustained rate limit abuse", session.sid, session.user_id)
            self.node.start_background(self.node.sio.disconnect, session.sid)
        return False
