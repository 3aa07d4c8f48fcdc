"""The Kafka event envelope (PROTOCOL §9) and the topics it goes to."""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from . import timeutil

# Short topic names; the full name is Settings.topic(short).
TOPIC_MESSAGES = "messages"
TOPIC_PRESENCE = "presence"
TOPIC_RECEIPTS = "receipts"
TOPIC_NOTIFICATIONS = "notifications"
TOPIC_CALLS = "calls"
ALL_TOPICS = (TOPIC_MESSAGES, TOPIC_PRESENCE, TOPIC_RECEIPTS, TOPIC_NOTIFICATIONS, TOPIC_CALLS)

TOPIC_OF_TYPE_PREFIX = {
    "message.": TOPIC_MESSAGES,
    "presence.": TOPIC_PRESENCE,
    "receipt.": TOPIC_RECEIPTS,
    "notification.": TOPIC_NOTIFICATIONS,
    "call.": TOPIC_CALLS,
}

# Every `source` this layer writes starts with this, so that the chat.messages
# consumer can tell the layer's own events from the message service's.
SOURCE_PREFIX = "realtime/"

# Namespace for deterministic event ids: a retried state change (an idempotent
# message_send retry, say) re-emits the same event_id, which is what lets
# consumers deduplicate (PROTOCOL §9: "Duplicates carry the same event_id").
_EVENT_NS = uuid.UUID("6f1d1c1e-2b51-4a3c-9a8e-6b7a0d5e4c21")


def source_id(kind: str, name: str) -> str:
    return f"{SOURCE_PREFIX}{kind}/{name}"


def is_own_source(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(SOURCE_PREFIX)


def topic_for(event_type: str) -> str:
    for prefix, topic in TOPIC_OF_TYPE_PREFIX.items():
        if event_type.startswith(prefix):
            return topic
    raise ValueError(f"no topic for event type {event_type!r}")


_EVENT_NS_BYTES = _EVENT_NS.bytes


def stable_event_id(*parts: str) -> str:
    """uuid5(_EVENT_NS, parts joined by US), computed without building UUID objects
    (a presence storm makes one per user: 5.5 -> 2.1 µs)."""
    digest = bytearray(hashlib.sha1(_EVENT_NS_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50   # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80   # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class Envelope:
    event_id: str
    type: str
    occurred_at: str
    source: str
    data: dict
    user_id: str | None = None
    conversation_id: str | None = None

    @property
    def key(self) -> str | None:
        """Kafka key: the conversation id, else the user id (PROTOCOL §9)."""
        return self.conversation_id or self.user_id

    @property
    def topic(self) -> str:
        return topic_for(self.type)

    def to_dict(self) -> dict:
        out = {
            "event_id": self.event_id,
            "type": self.type,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "data": self.data,
        }
        if self.user_id is not None:
            out["user_id"] = self.user_id
        if self.conversation_id is not None:
            out["conversation_id"] = self.conversation_id
        return out


def make(event_type: str, source: str, data: dict, *, user_id: str | None = None,
         conversation_id: str | None = None, event_id: str | None = None,
         occurred_at: float | None = None) -> Envelope:
    topic_for(event_type)  # fail early on an unknown type
    return Envelope(
        event_id=event_id or str(uuid.uuid4()),
        type=event_type,
        occurred_at=timeutil.iso(occurred_at if occurred_at is not None else timeutil.now()),
        source=source,
        data=data,
        user_id=user_id,
        conversation_id=conversation_id,
    )
