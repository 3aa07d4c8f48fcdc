"""The call state machine (PROTOCOL §10), pure: (state, event, now, settings) -> (state, effects).

No I/O here. The caller (realtime.actions.calls) loads the state under the call's
Redis lock, applies one event, stores the new state and then carries out the
effects in order: record (MongoDB, Kafka outbox), then send (socket events).
Timers only nominate: `RingTimeout` and `GraceCheck` re-check the real deadline
against `now` and do nothing when it has moved or the call has moved on.

A participant is one device of a user (`Party`). 1:1 calls end as soon as one side
hangs up, declines or is gone; group calls end when the last participant leaves.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import CONFLICT, FORBIDDEN, ApiError

RINGING = "ringing"
ACTIVE = "active"
ENDED = "ended"

# End reasons on the wire.
HANGUP = "hangup"
DECLINED = "declined"
BUSY = "busy"
NO_ANSWER = "no_answer"
CONNECTION_LOST = "connection_lost"
ANSWERED_ELSEWHERE = "answered_elsewhere"
REJECT_REASONS = (DECLINED, BUSY)

# Mesh: every participant sends media to every other, so the cost grows with n².
MAX_PARTICIPANTS = 8


@dataclass(frozen=True)
class Party:
    user_id: str
    device_id: str

    @property
    def key(self) -> str:
        return f"{self.user_id}\x1f{self.device_id}"


@dataclass
class CallState:
    call_id: str
    conversation_id: str
    group: bool
    media: str
    caller: Party
    callee_ids: list[str]             # everyone rung at the start (busy ones excluded)
    busy_ids: list[str]               # callees skipped as already in a call
    created_at: float
    ring_deadline: float
    status: str = RINGING
    ringing_ids: list[str] = field(default_factory=list)      # callees not yet answered / declined
    participants: list[Party] = field(default_factory=list)   # devices in the call now
    ever_joined: list[Party] = field(default_factory=list)    # for the record
    gone_since: dict[str, float] = field(default_factory=dict)  # Party.key -> socketless since
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    ended_by: str | None = None

    # --- queries ---------------------------------------------------------------
    @property
    def involved_ids(self) -> list[str]:
        """Every user told about the call: caller, callees, anyone who joined."""
        ids = [self.caller.user_id, *self.callee_ids, *(p.user_id for p in self.ever_joined)]
        return list(dict.fromkeys(ids))

    def is_participant(self, party: Party) -> bool:
        return party in self.participants

    def participant_devices(self, user_id: str) -> list[Party]:
        return [p for p in self.participants if p.user_id == user_id]

    @property
    def duration_s(self) -> int:
        if self.answered_at is None or self.ended_at is None:
            return 0
        return max(0, round(self.ended_at - self.answered_at))

    # --- (de)serialisation for Redis ---------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CallState":
        data = dict(data)
        data["caller"] = Party(**data["caller"])
        data["participants"] = [Party(**p) for p in data.get("participants", [])]
        data["ever_joined"] = [Party(**p) for p in data.get("ever_joined", [])]
        return cls(**data)


# --- Effects: what the action layer carries out, in order ------------------------
@dataclass(frozen=True)
class ToUsers:
    """An event to every socket of these users, except the sockets of one device."""
    event: str
    data: dict
    user_ids: tuple[str, ...]
    except_party: Party | None = None


@dataclass(frozen=True)
class ToParties:
    """An event to the sockets of these devices only."""
    event: str
    data: dict
    parties: tuple[Party, ...]


@dataclass(frozen=True)
class Record:
    """Store the call record and append the Kafka event `call.<kind>`."""
    kind: str                           # "started" | "answered" | "ended" | "updated"


@dataclass(frozen=True)
class Claim:
    """The user is now in this call (busy for others)."""
    user_id: str


@dataclass(frozen=True)
class Release:
    """The user is no longer in this call (when none of their devices is)."""
    user_id: str


@dataclass(frozen=True)
class Nominate:
    """Ask for a re-check at `at` (ring timeout, or a participant's reconnect grace)."""
    kind: str                           # "ring" | "gone"
    at: float
    party: Party | None = None


@dataclass(frozen=True)
class Missed:
    """These users did not pick up: the missed-call notification hook."""
    user_ids: tuple[str, ...]


Effect = Any


# --- Events ------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    party: Party
    sdp: Any = None


@dataclass(frozen=True)
class Reject:
    user_id: str
    reason: str = DECLINED


@dataclass(frozen=True)
class End:
    user_id: str


@dataclass(frozen=True)
class Join:
    party: Party


@dataclass(frozen=True)
class Leave:
    party: Party


@dataclass(frozen=True)
class RingTimeout:
    pass


@dataclass(frozen=True)
class DeviceGone:
    """The device's last socket closed."""
    party: Party


@dataclass(frozen=True)
class GraceCheck:
    """Re-check a device that went socketless; `connected` is whether it has a socket now."""
    party: Party
    connected: bool


# --- Start ---------------------------------------------------------------------------
def start(call_id: str, conversation_id: str, group: bool, media: str, caller: Party,
          callee_ids: list[str], busy_ids: list[str], sdp: Any, now: float,
          ring_timeout_s: float) -> tuple[CallState, list[Effect]]:
    """A new call. Busy callees are not rung; a 1:1 call to a busy callee ends at once."""
    ringing = [u for u in callee_ids if u not in busy_ids]
    state = CallState(
        call_id=call_id, conversation_id=conversation_id, group=group, media=media, caller=caller,
        callee_ids=list(callee_ids), busy_ids=list(busy_ids), created_at=now,
        ring_deadline=now + ring_timeout_s, ringing_ids=ringing, participants=[caller],
        ever_joined=[caller],
    )
    effects: list[Effect] = [Claim(caller.user_id), Record("started")]
    if not ringing:
        return _end(state, BUSY, None, now, effects)
    effects.append(ToUsers("call_incoming", {
        "call_id": call_id, "conversation_id": conversation_id,
        "from": {"user_id": caller.user_id, "device_id": caller.device_id},
        "media": media, "sdp": sdp, "group": group,
        "expires_at": state.ring_deadline,   # epoch seconds; the action formats it
    }, tuple(ringing)))
    effects.append(Nominate("ring", state.ring_deadline))
    return state, effects


# --- Transitions ---------------------------------------------------------------------
def apply(state: CallState, event: Any, now: float, settings: Any) -> tuple[CallState, list[Effect]]:
    """Apply one event. Refusals raise ApiError (nothing changes); no-ops return no effects."""
    state = replace(state, ringing_ids=list(state.ringing_ids), participants=list(state.participants),
                    ever_joined=list(state.ever_joined), gone_since=dict(state.gone_since))
    handler = _HANDLERS[type(event)]
    return handler(state, event, now, settings)


def _require_open(state: CallState) -> None:
    if state.status == ENDED:
        raise ApiError(CONFLICT, "the call has ended")


def _answer(state: CallState, ev: Answer, now: float, settings: Any):
    _require_open(state)
    user = ev.party.user_id
    if user not in state.ringing_ids:
        if any(p.user_id == user for p in state.participants) or user in state.callee_ids:
            raise ApiError(CONFLICT, "the call was already answered")
        raise ApiError(FORBIDDEN, "not a callee of this call")
    if len(state.participants) >= MAX_PARTICIPANTS:
        raise ApiError(CONFLICT, f"the call has {MAX_PARTICIPANTS} participants already")
    state.ringing_ids.remove(user)
    state.participants.append(ev.party)
    state.ever_joined.append(ev.party)
    effects: list[Effect] = [Claim(user)]
    first_answer = state.answered_at is None
    if first_answer:
        state.answered_at = now
        state.status = ACTIVE
    effects.append(Record("answered" if first_answer else "updated"))
    effects.append(ToParties("call_answered", {
        "call_id": state.call_id, "user_id": user, "device_id": ev.party.device_id, "sdp": ev.sdp,
    }, (state.caller,) if state.caller in state.participants else ()))
    effects.append(ToUsers("call_ended", {
        "call_id": state.call_id, "reason": ANSWERED_ELSEWHERE, "ended_by": None, "duration_s": 0,
    }, (user,), except_party=ev.party))
    if state.group:
        others = tuple(p for p in state.participants if p != ev.party)
        effects.append(ToParties("call_participant_joined", {
            "call_id": state.call_id, "user_id": user, "device_id": ev.party.device_id}, others))
    return state, effects


def _reject(state: CallState, ev: Reject, now: float, settings: Any):
    _require_open(state)
    if ev.user_id not in state.ringing_ids:
        if ev.user_id in state.callee_ids:
            raise ApiError(CONFLICT, "the call is no longer ringing for you")
        raise ApiError(FORBIDDEN, "not a callee of this call")
    state.ringing_ids.remove(ev.user_id)
    if not state.group:
        return _end(state, ev.reason, ev.user_id, now, [])
    effects: list[Effect] = [
        Record("updated"),
        # Stop ringing on this user's other devices.
        ToUsers("call_ended", {"call_id": state.call_id, "reason": ev.reason, "ended_by": ev.user_id,
                               "duration_s": 0}, (ev.user_id,)),
    ]
    if not state.ringing_ids and len(state.participants) <= 1 and state.answered_at is None:
        return _end(state, ev.reason, ev.user_id, now, effects)
    return state, effects


def _end_event(state: CallState, ev: End, now: float, settings: Any):
    _require_open(state)
    if ev.user_id not in state.involved_ids:
        raise ApiError(FORBIDDEN, "not part of this call")
    if ev.user_id in state.ringing_ids and not any(p.user_id == ev.user_id for p in state.participants):
        # A ringing callee hanging up declines.
        return _reject(state, Reject(ev.user_id, DECLINED), now, settings)
    return _end(state, HANGUP, ev.user_id, now, [])


def _join(state: CallState, ev: Join, now: float, settings: Any):
    _require_open(state)
    if not state.group:
        raise ApiError(CONFLICT, "only group calls can be joined; answer a 1:1 call")
    if ev.party.user_id in state.ringing_ids:
        return _answer(state, Answer(ev.party), now, settings)
    if state.is_participant(ev.party):
        return state, []              # idempotent
    if len(state.participants) >= MAX_PARTICIPANTS:
        raise ApiError(CONFLICT, f"the call has {MAX_PARTICIPANTS} participants already")
    others = tuple(state.participants)
    state.participants.append(ev.party)
    state.ever_joined.append(ev.party)
    effects: list[Effect] = [Claim(ev.party.user_id), Record("updated"),
                             ToParties("call_participant_joined", {
                                 "call_id": state.call_id, "user_id": ev.party.user_id,
                                 "device_id": ev.party.device_id}, others)]
    return state, effects


def _leave_party(state: CallState, party: Party, now: float, reason_if_last: str,
                 ended_by: str | None) -> tuple[CallState, list[Effect]]:
    state.participants.remove(party)
    state.gone_since.pop(party.key, None)
    effects: list[Effect] = []
    if not state.participant_devices(party.user_id):
        effects.append(Release(party.user_id))
    if not state.participants:
        return _end(state, reason_if_last, ended_by, now, effects)
    effects.append(Record("updated"))
    effects.append(ToParties("call_participant_left", {
        "call_id": state.call_id, "user_id": party.user_id, "device_id": party.device_id},
        tuple(state.participants)))
    return state, effects


def _leave(state: CallState, ev: Leave, now: float, settings: Any):
    _require_open(state)
    if not state.is_participant(ev.party):
        if ev.party.user_id in state.involved_ids:
            return state, []          # idempotent
        raise ApiError(FORBIDDEN, "not part of this call")
    if not state.group:
        return _end(state, HANGUP, ev.party.user_id, now, [])
    return _leave_party(state, ev.party, now, HANGUP, ev.party.user_id)


def _ring_timeout(state: CallState, ev: RingTimeout, now: float, settings: Any):
    if state.status == ENDED or not state.ringing_ids:
        return state, []
    if now < state.ring_deadline:
        return state, [Nominate("ring", state.ring_deadline)]    # woken early: re-nominate
    missed = tuple(state.ringing_ids)
    if not state.group or (state.answered_at is None and len(state.participants) <= 1):
        return _end(state, NO_ANSWER, None, now, [Missed(missed)])
    # A group call that goes on: stop ringing the others.
    state.ringing_ids = []
    return state, [Record("updated"), Missed(missed),
                   ToUsers("call_ended", {"call_id": state.call_id, "reason": NO_ANSWER,
                                          "ended_by": None, "duration_s": 0}, missed)]


def _device_gone(state: CallState, ev: DeviceGone, now: float, settings: Any):
    if state.status == ENDED or not state.is_participant(ev.party):
        return state, []
    state.gone_since[ev.party.key] = now
    return state, [Nominate("gone", now + settings.call_reconnect_grace_s, ev.party)]


def _grace_check(state: CallState, ev: GraceCheck, now: float, settings: Any):
    since = state.gone_since.get(ev.party.key)
    if state.status == ENDED or since is None or not state.is_participant(ev.party):
        return state, []
    if ev.connected:
        del state.gone_since[ev.party.key]    # reconnected in time: keeps the call
        return state, []
    deadline = since + settings.call_reconnect_grace_s
    if now < deadline:
        return state, [Nominate("gone", deadline, ev.party)]
    if not state.group:
        return _end(state, CONNECTION_LOST, None, now, [])
    return _leave_party(state, ev.party, now, CONNECTION_LOST, None)


def _end(state: CallState, reason: str, ended_by: str | None, now: float,
         effects: list[Effect]) -> tuple[CallState, list[Effect]]:
    state.status = ENDED
    state.ended_at = now
    state.end_reason = reason
    state.ended_by = ended_by
    released = list(dict.fromkeys([state.caller.user_id, *(p.user_id for p in state.participants)]))
    state.participants = []
    state.ringing_ids = []
    state.gone_since = {}
    effects = [e for e in effects if not isinstance(e, Release)]
    effects += [Release(u) for u in released]
    effects.append(Record("ended"))
    effects.append(ToUsers("call_ended", {
        "call_id": state.call_id, "reason": reason, "ended_by": ended_by, "duration_s": state.duration_s,
    }, tuple(state.involved_ids)))
    return state, effects


_HANDLERS = {
    Answer: _answer,
    Reject: _reject,
    End: _end_event,
    Join: _join,
    Leave: _leave,
    RingTimeout: _ring_timeout,
    DeviceGone: _device_gone,
    GraceCheck: _grace_check,
}
