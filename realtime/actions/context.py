"""What an action needs from the process running it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from redis import Redis

from .. import timeutil
from ..settings import Settings


class Emitter(Protocol):
    def __call__(self, event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None: ...


@dataclass
class Context:
    settings: Settings
    redis: Redis
    emit: Emitter
    source: str                       # envelope `source`: this node's or worker's id
    clock: Callable[[], float] = field(default=timeutil.now)


@dataclass(frozen=True)
class Actor:
    """The authenticated caller of an action."""

    user_id: str
    sid: str | None = None            # the Socket.IO session, skipped in room fan-out
    device_id: str | None = None
