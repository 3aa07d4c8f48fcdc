"""Typing indicators (PROTOCOL §6) as pure functions of (state, now, settings).

The state of one (conversation, user) is its deadline: None when not typing, else
the time the indicator expires unless refreshed. Storage (realtime.actions.typing)
applies these decisions atomically in Redis; timers (the edge's deadline loop, the
beat sweep) only nominate candidates, and `is_expired` is re-checked before acting.
"""
from __future__ import annotations

from dataclasses import dataclass

from .settings import Settings


@dataclass(frozen=True)
class Transition:
    deadline: float | None      # the new state
    announce: bool | None       # typing value to announce, None for no event


def deadline(now: float, settings: Settings) -> float:
    return now + settings.typing_expiry_s


def on_start(previous: float | None, now: float, settings: Settings) -> Transition:
    """A start or a refresh. Only a start from "not typing" is announced; an entry
    whose deadline passed but whose stop was not announced yet is still "typing"
    to everyone who saw it, so refreshing it announces nothing."""
    return Transition(deadline(now, settings), True if previous is None else None)


def on_stop(previous: float | None) -> Transition:
    """typing_stop, message_send, the last socket's disconnect."""
    return Transition(None, False if previous is not None else None)


def is_expired(current: float | None, now: float) -> bool:
    return current is not None and current <= now


def on_deadline(current: float | None, now: float) -> Transition:
    """A timer fired. Announce the stop only if the deadline really passed (a
    refresh since the timer was set moved it)."""
    if is_expired(current, now):
        return Transition(None, False)
    return Transition(current, None)
