"""Pure decisions of the notification feature. No I/O: callers pass what they read.

- `route`: how one recipient of a new message is reached (in the room: nothing;
  connected elsewhere: in-app; not connected: push).
- `allows`: whether the recipient's settings let a notification through.
- `coalesce` / `flush`: at most one push per (user, conversation) per window,
  the later ones folded into one push carrying a count.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable

LEVELS = ("all", "mentions", "none")

ROUTE_NONE = "none"
ROUTE_IN_APP = "in_app"
ROUTE_PUSH = "push"

KIND_MESSAGE = "message"
KIND_MENTION = "mention"
KIND_CALL_MISSED = "call_missed"
KIND_CLEAR = "clear"

# Push previews are cut here: push services cap payloads at 4 KiB, encrypted.
PREVIEW_CHARS = 200

# `@user_id`: ids are what validation.identifier accepts in practice (no spaces);
# trailing punctuation of a sentence ("hi @bob.") is not part of the id.
_MENTION = re.compile(r"@([^\s@,;:!?()\[\]{}<>\"']+)")


def mentioned_users(body: str | None) -> set[str]:
    if not body:
        return set()
    return {m.rstrip(".") for m in _MENTION.findall(body)}


def route(connected: bool, in_room: bool) -> str:
    if in_room:
        return ROUTE_NONE
    if connected:
        return ROUTE_IN_APP
    return ROUTE_PUSH


@dataclass(frozen=True)
class Preference:
    level: str = "all"
    muted_until: float | None = None  # epoch seconds


def effective(default: Preference | None, conversation: Preference | None) -> Preference:
    """A conversation's own setting wins over the user's default."""
    return conversation or default or Preference()


def allows(pref: Preference, kind: str, now: float) -> bool:
    """Whether a notification of `kind` passes the setting at `now`.

    Mute silences everything until it ends. `mentions` lets through what names the
    user directly: mentions and missed calls. `none` silences all.
    """
    if pref.muted_until is not None and pref.muted_until > now:
        return False
    if pref.level == "none":
        return False
    if pref.level == "mentions":
        return kind in (KIND_MENTION, KIND_CALL_MISSED)
    return True


def kind_for(recipient: str, body: str | None) -> str:
    return KIND_MENTION if recipient in mentioned_users(body) else KIND_MESSAGE


def unread_total(last_seqs: dict[str, int], read_seqs: dict[str, int]) -> int:
    """Badge: messages after the user's read watermark, over all their conversations."""
    return sum(max(0, (last or 0) - (read_seqs.get(conv) or 0)) for conv, last in last_seqs.items())


def preview(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def payload(kind: str, conversation_id: str, count: int, badge: int, title: str, body: str,
            message_id: str | None = None, call_id: str | None = None) -> dict:
    """The push payload (PROTOCOL §8); `type` is message for mentions too."""
    out = {
        "type": {KIND_MENTION: KIND_MESSAGE}.get(kind, kind),
        "conversation_id": conversation_id,
        "count": count,
        "badge": badge,
        "title": title,
        "body": body,
    }
    if message_id is not None:
        out["message_id"] = message_id
    if call_id is not None:
        out["call_id"] = call_id
    return out


# --- Coalescing --------------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """Push state of one (user, conversation).

    `until`: end of the current window (a push went out at until - window_s);
    `pending`: notifications that arrived inside it, not pushed yet;
    `latest`: the newest of them (its id carries the coalesced push).
    """

    until: float = 0.0
    pending: int = 0
    latest: str | None = None

    def to_dict(self) -> dict:
        return {"until": self.until, "pending": self.pending, "latest": self.latest}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Window":
        if not data:
            return cls()
        return cls(until=float(data.get("until") or 0), pending=int(data.get("pending") or 0),
                   latest=data.get("latest"))


SEND_NOW = "send_now"
DEFER = "defer"            # folded into the pending push; a flush is already due
DEFER_SCHEDULE = "defer_schedule"  # first of the pending: schedule a flush at `until`


def coalesce(window: Window, notification_id: str, now: float, window_s: float) -> tuple[str, Window]:
    """A push-worthy notification arrives at `now`: send it at once, or fold it in."""
    if now >= window.until and window.pending == 0:
        return SEND_NOW, Window(until=now + window_s)
    action = DEFER_SCHEDULE if window.pending == 0 else DEFER
    return action, replace(window, pending=window.pending + 1, latest=notification_id)


def flush(window: Window, now: float, window_s: float) -> tuple[tuple[str, int] | None, Window]:
    """The scheduled flush runs: ((notification id, count) to push, or None; new state).

    Early (the clock of the scheduler ran ahead) it sends nothing and keeps state;
    the caller reschedules for `window.until`.
    """
    if window.pending == 0 or window.latest is None:
        return None, window
    if now < window.until:
        return None, window
    return (window.latest, window.pending), Window(until=now + window_s)


def clear_pending(window: Window) -> Window:
    """The user read the conversation: what was pending is no longer news."""
    return replace(window, pending=0, latest=None)


def other_devices(device_ids: Iterable[str], reading_device_id: str | None) -> list[str]:
    return [d for d in device_ids if d != reading_device_id]
