"""Presence policy: pure functions of (state, now, settings), no I/O, no clock.

The shown presence of a user is derived from three stored facts:
  - how many sockets they have connected (on any node, any device),
  - the status they chose (`presence_update`), and
  - when their last socket closed (`offline_since`).
`decide` compares that with what subscribers were last told (`announced`) and
says whether to announce now, and when to look at the user again. Callers only
nominate users (a timer, a connect, a disconnect, a sweep); the decision is
always re-taken from the stored state, so a stale or early nomination is harmless.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

ONLINE = "online"
AWAY = "away"
BUSY = "busy"
INVISIBLE = "invisible"
OFFLINE = "offline"

# What a user may choose. `offline` is derived (no socket), never chosen:
# `invisible` is how one looks offline while connected.
CHOOSABLE = (ONLINE, AWAY, BUSY, INVISIBLE)
ALL_STATUSES = (ONLINE, AWAY, BUSY, INVISIBLE, OFFLINE)


@dataclass(frozen=True)
class Shown:
    """What other users see (the `user_presence` payload without the user id)."""

    status: str = OFFLINE
    message: str | None = None
    last_seen: float | None = None


NEVER_SEEN = Shown()


@dataclass(frozen=True)
class PresenceState:
    chosen: str = ONLINE
    message: str | None = None
    connections: int = 0                # live sockets, all devices, all nodes
    offline_since: float | None = None  # when the last socket closed (stale while connected)
    last_seen: float | None = None      # when the user last went offline (announced)
    announced: Shown = NEVER_SEEN       # what subscribers were last told
    announced_at: float | None = None


@dataclass(frozen=True)
class Decision:
    announce: Shown | None          # announce this now (None: nothing to say)
    state: PresenceState            # the state after the decision (to store)
    recheck_at: float | None        # look at the user again then (grace or coalescing)


def shown_while_connected(state: PresenceState) -> Shown:
    if state.chosen == INVISIBLE:
        # Indistinguishable from a real offline: no message, the old last_seen.
        return Shown(OFFLINE, None, state.last_seen)
    return Shown(state.chosen, state.message, state.last_seen)


def in_grace(state: PresenceState, now: float, grace_s: float) -> bool:
    """No socket left, but the last one closed less than the grace ago."""
    return (state.connections == 0 and state.offline_since is not None
            and now < state.offline_since + grace_s)


def target(state: PresenceState, now: float, grace_s: float) -> tuple[Shown, float | None]:
    """What others should see now, and when that could change by itself (grace end)."""
    if state.connections > 0:
        return shown_while_connected(state), None
    if in_grace(state, now, grace_s):
        # A page reload or network blip: keep showing what was announced, and
        # settle once the grace is over.
        return state.announced, state.offline_since + grace_s
    # Offline. Without a recorded close time (the socket vanished without a
    # trace) the best estimate of last_seen is the earlier one, else now.
    if state.announced.status == OFFLINE:
        # Already offline for others (or never seen online, e.g. invisible the
        # whole time): keep the last_seen they know, nothing new to tell.
        return state.announced, None
    last_seen = state.offline_since if state.offline_since is not None else (state.last_seen or now)
    return Shown(OFFLINE, None, last_seen), None


def decide(state: PresenceState, now: float, *, grace_s: float, coalesce_s: float) -> Decision:
    """Announce the target if it differs from what was announced, at most once
    per `coalesce_s` per user: changes inside the window are held and only the
    latest is announced at the window's end (and only if it still differs)."""
    want, changes_at = target(state, now, grace_s)
    if want == state.announced:
        return Decision(None, state, changes_at)
    if state.announced_at is not None and now < state.announced_at + coalesce_s:
        recheck = state.announced_at + coalesce_s
        if changes_at is not None:
            recheck = min(recheck, changes_at)
        return Decision(None, state, recheck)
    new_state = replace(state, announced=want, announced_at=now,
                        last_seen=want.last_seen if want.status == OFFLINE and state.connections == 0
                        else state.last_seen)
    return Decision(want, new_state, changes_at)


def choose(state: PresenceState, status: str, message: str | None) -> PresenceState:
    """`presence_update`: the chosen status and message (validated by the caller)."""
    return replace(state, chosen=status, message=message)
