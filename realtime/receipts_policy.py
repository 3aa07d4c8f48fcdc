"""Read receipts and unread counts (PROTOCOL §7) as pure functions of
(state, now, settings).

A read waits in Redis as a `PendingRead` (the newest public and private read of
one user in one conversation, merged with max) until the aggregation takes it,
at most once per RECEIPT_WINDOW_S per (user, conversation) (`is_due`). The
aggregation turns stored state + pending read into a `Target` (`aggregate`):
watermarks only move forward, never past the conversation's last seq.

Unread is `last_seq - private watermark`: one's own messages are never unread
because sending counts as a private read up to one's own message.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson

from .settings import Settings


@dataclass(frozen=True)
class PendingRead:
    public_seq: int = -1        # newest public read (-1: none)
    private_seq: int = -1       # newest read of either kind
    read_at_ms: int = 0         # when the newest advancing read arrived

    @classmethod
    def decode(cls, raw: str | bytes) -> "PendingRead":
        data = orjson.loads(raw)
        return cls(public_seq=int(data.get("pub", -1)), private_seq=int(data.get("prv", -1)),
                   read_at_ms=int(data.get("at", 0)))


@dataclass(frozen=True)
class StoredRead:
    seq: int = 0                # public watermark
    private_seq: int = 0        # watermark for unread (includes private reads)


@dataclass(frozen=True)
class Target:
    """What one aggregation writes and announces for one (conversation, user)."""
    conversation_id: str
    user_id: str
    seq: int
    private_seq: int
    read_at_ms: int
    last_seq: int
    public_advanced: bool
    private_advanced: bool

    @property
    def unread(self) -> int:
        return unread(self.last_seq, self.private_seq)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: str | bytes) -> "Target":
        return cls(**orjson.loads(raw))


def is_due(last_aggregated_ms: int | None, now: float, settings: Settings) -> bool:
    """At most one aggregation (one write, one receipt) per window per pair."""
    if last_aggregated_ms is None:
        return True
    return now * 1000 - last_aggregated_ms >= settings.receipt_window_s * 1000


def capped(seq: int, last_seq: int) -> int:
    return min(seq, last_seq)


def aggregate(conversation_id: str, user_id: str, stored: StoredRead, pending: PendingRead,
              last_seq: int) -> Target | None:
    """The new state after a pending read, or None when nothing moves forward
    (a backwards or repeated read changes nothing)."""
    seq = max(stored.seq, capped(pending.public_seq, last_seq))
    private_seq = max(stored.private_seq, seq, capped(pending.private_seq, last_seq))
    public_advanced = seq > stored.seq
    private_advanced = private_seq > stored.private_seq
    if not (public_advanced or private_advanced):
        return None
    return Target(conversation_id=conversation_id, user_id=user_id, seq=seq, private_seq=private_seq,
                  read_at_ms=pending.read_at_ms, last_seq=last_seq,
                  public_advanced=public_advanced, private_advanced=private_advanced)


def unread(last_seq: int, private_seq: int) -> int:
    return max(0, last_seq - private_seq)


def effective(stored: StoredRead, pending: PendingRead | None, last_seq: int) -> StoredRead:
    """Stored state with a not yet aggregated read applied (for receipts_get and
    unread_get, so a client reads its own writes)."""
    if pending is None:
        return stored
    target = aggregate("", "", stored, pending, last_seq)
    return stored if target is None else StoredRead(seq=target.seq, private_seq=target.private_seq)
