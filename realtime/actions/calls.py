"""Calls (PROTOCOL §10): every call state change and the events it sends.

Each change loads the call's state under its conversation's transition lock,
applies one event of the pure machine (realtime.calls.machine), stores the new
state in Redis, then carries out the effects: the MongoDB record and the Kafka
outbox first, socket events last. Runs on edge nodes (client events, disconnects)
and in workers (ring timeouts, reconnect grace), which share this code.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

import orjson

from .. import connections, envelope, keys, outbox, timeutil
from ..calls import machine, missed, store
from ..calls.ice import ice_servers
from ..calls.machine import CallState, Party
from ..db import DB_DOWN_ERRORS
from ..errors import CONFLICT, FORBIDDEN, NOT_FOUND, TOO_LARGE, ApiError
from ..models import Call, CallParticipant
from . import conversations
from .context import Actor, Context

log = logging.getLogger(__name__)

SIGNAL_KINDS = ("offer", "answer", "ice_candidate", "renegotiate")


def new_call_id(now: float) -> str:
    return f"call-{int(now * 1000):012x}{secrets.token_hex(6)}"


def check_sdp_size(ctx: Context, value: Any, name: str = "sdp") -> None:
    if value is None:
        return
    size = len(value.encode()) if isinstance(value, str) else len(orjson.dumps(value))
    if size > ctx.settings.max_sdp_bytes:
        raise ApiError(TOO_LARGE, f"{name} over {ctx.settings.max_sdp_bytes} bytes")


def _party(actor: Actor) -> Party:
    return Party(actor.user_id, actor.device_id or actor.sid or "")


# --- client events ------------------------------------------------------------------
def initiate(ctx: Context, actor: Actor, conversation_id: str, media: str,
             callee_ids: list[str] | None, sdp: Any) -> dict:
    conv = conversations.load_for_member(conversation_id, actor.user_id)
    members = list(conv.members or [])
    if callee_ids is None:
        callees = [m for m in members if m != actor.user_id]
    else:
        outsiders = [u for u in callee_ids if u not in members]
        if outsiders:
            raise ApiError(FORBIDDEN, "callees must be members of the conversation")
        callees = [u for u in callee_ids if u != actor.user_id]
    if not callees:
        raise ApiError(CONFLICT, "nobody else to call in this conversation")
    group = conv.kind == "group"
    if not group and len(callees) > 1:
        raise ApiError(CONFLICT, "a 1:1 call has one callee")
    caller = _party(actor)
    now = ctx.clock()
    r = ctx.redis
    with store.transition_lock(r, conversation_id):
        existing_id = store.current_call_of_conversation(r, conversation_id)
        existing = store.load(r, existing_id) if existing_id else None
        if existing is not None and existing.status != machine.ENDED:
            # One call per conversation. Glare (both sides calling at once) lands
            # here for the later of the two: it rings for them already.
            if actor.user_id in existing.ringing_ids:
                raise _conflict_with(existing.call_id, "the other side is calling you: answer that call")
            raise _conflict_with(existing.call_id, "this conversation has a call already"
                                 + ("; join it" if existing.group else ""))
        call_id = new_call_id(now)
        if not store.claim_user(r, actor.user_id, call_id):
            raise ApiError(CONFLICT, "you are in another call")
        busy = store.busy_users(r, callees)
        state, effects = machine.start(call_id, conversation_id, group, media, caller, callees, busy,
                                       sdp, now, ctx.settings.call_ring_timeout_s)
        _commit(ctx, state, effects)
    return {"call_id": call_id, "ice_servers": ice_servers(ctx.settings, actor.user_id, now)}


def _conflict_with(call_id: str, message: str) -> ApiError:
    err = ApiError(CONFLICT, message)
    err.call_id = call_id  # the handler adds it to the ack
    return err


def answer(ctx: Context, actor: Actor, call_id: str, sdp: Any) -> dict:
    party = _party(actor)
    state = _transition(ctx, call_id, lambda s: _claim_then(ctx, s, actor.user_id),
                        machine.Answer(party, sdp))
    out = {"ice_servers": ice_servers(ctx.settings, actor.user_id, ctx.clock())}
    if state.group:
        out["participants"] = _wire_parties(state.participants)
    return out


def reject(ctx: Context, actor: Actor, call_id: str, reason: str) -> None:
    _transition(ctx, call_id, None, machine.Reject(actor.user_id, reason))


def end(ctx: Context, actor: Actor, call_id: str) -> None:
    _transition(ctx, call_id, None, machine.End(actor.user_id))


def join(ctx: Context, actor: Actor, call_id: str) -> dict:
    state = store.load(ctx.redis, call_id)
    if state is None:
        raise ApiError(NOT_FOUND, "call not found")
    conversations.load_for_member(state.conversation_id, actor.user_id)
    state = _transition(ctx, call_id, lambda s: _claim_then(ctx, s, actor.user_id),
                        machine.Join(_party(actor)))
    return {"participants": _wire_parties(state.participants),
            "ice_servers": ice_servers(ctx.settings, actor.user_id, ctx.clock())}


def leave(ctx: Context, actor: Actor, call_id: str) -> None:
    _transition(ctx, call_id, None, machine.Leave(_party(actor)))


def signal(ctx: Context, actor: Actor, call_id: str, to_user_id: str, to_device_id: str | None,
           kind: str, data: Any) -> None:
    """Relay SDP / ICE between two participants of one call. Read-only: no lock."""
    if kind in ("offer", "answer", "renegotiate"):
        check_sdp_size(ctx, data, "data")
    state = store.load(ctx.redis, call_id)
    if state is None or state.status == machine.ENDED:
        raise ApiError(NOT_FOUND, "no such call in progress")
    sender = _party(actor)
    if not state.is_participant(sender):
        raise ApiError(FORBIDDEN, "not a participant of this call")
    targets = [p for p in state.participant_devices(to_user_id)
               if to_device_id is None or p.device_id == to_device_id]
    targets = [p for p in targets if p != sender]
    if not targets:
        raise ApiError(FORBIDDEN, "the target is not a participant of this call")
    _send_to_parties(ctx, "call_signal", {
        "call_id": call_id, "from_user_id": sender.user_id, "from_device_id": sender.device_id,
        "kind": kind, "data": data,
    }, targets)


# --- socket lifecycle and timers ---------------------------------------------------------
def calls_of_users(ctx: Context, user_ids: list[str]) -> dict[str, str]:
    """user_id -> call_id of those of these users who are in a call, in one round trip
    (the first question about a batch of closed sockets: most are in none)."""
    return store.calls_of_users(ctx.redis, user_ids)


def device_disconnected(ctx: Context, user_id: str, device_id: str, call_id: str) -> None:
    """A socket of the device closed while its user is in `call_id` (calls_of_users):
    if the device has no other socket, start its reconnect grace."""
    if _device_connected(ctx, user_id, device_id):
        return
    party = Party(user_id, device_id)
    try:
        _transition(ctx, call_id, None, machine.DeviceGone(party))
    except ApiError as exc:
        log.info("call %s: disconnect of %s/%s not recorded: %s", call_id, user_id, device_id, exc.message)


def run_deadline(ctx: Context, member: str) -> None:
    """A nominated deadline came due (worker sweep): re-check it under the lock and act."""
    kind, call_id, party = store.parse_deadline_member(member)
    state = store.load(ctx.redis, call_id)
    if state is None:
        store.drop_nomination(ctx.redis, member)
        return
    with store.transition_lock(ctx.redis, state.conversation_id):
        # Dropped before acting: an action that needs a later check nominates again.
        store.drop_nomination(ctx.redis, member)
        state = store.load(ctx.redis, call_id)
        if state is None:
            return
        if kind == "ring":
            event = machine.RingTimeout()
        elif kind == "gone" and party is not None:
            event = machine.GraceCheck(party, _device_connected(ctx, party.user_id, party.device_id))
        else:
            return
        new_state, effects = machine.apply(state, event, ctx.clock(), ctx.settings)
        if effects:
            _commit(ctx, new_state, effects)


# --- plumbing -----------------------------------------------------------------------------
def _claim_then(ctx: Context, state: CallState, user_id: str) -> None:
    """Before answering / joining: the user must not be in another call."""
    if state.status == machine.ENDED:
        return  # the machine refuses with `conflict`
    if user_id in state.ringing_ids or state.group:
        if not store.claim_user(ctx.redis, user_id, state.call_id):
            raise ApiError(CONFLICT, "you are in another call")


def _transition(ctx: Context, call_id: str, precheck, event) -> CallState:
    state = store.load(ctx.redis, call_id)
    if state is None:
        raise ApiError(NOT_FOUND, "call not found")
    with store.transition_lock(ctx.redis, state.conversation_id):
        state = store.load(ctx.redis, call_id)
        if state is None:
            raise ApiError(NOT_FOUND, "call not found")
        if precheck is not None:
            precheck(state)
        try:
            new_state, effects = machine.apply(state, event, ctx.clock(), ctx.settings)
        except ApiError:
            # Undo a claim taken for an answer the machine refused (e.g. a second answer).
            if isinstance(event, (machine.Answer, machine.Join)) and not any(
                    p.user_id == event.party.user_id for p in state.participants):
                store.release_user(ctx.redis, event.party.user_id, call_id)
            raise
        if effects:
            _commit(ctx, new_state, effects)
        return new_state


def _commit(ctx: Context, state: CallState, effects: list) -> None:
    """Store the state, then record, then send: nothing is announced that was not stored."""
    r = ctx.redis
    store.save(r, state)
    for effect in effects:
        if isinstance(effect, machine.Claim):
            store.claim_user(r, effect.user_id, state.call_id)
        elif isinstance(effect, machine.Release):
            store.release_user(r, effect.user_id, state.call_id)
        elif isinstance(effect, machine.Nominate):
            store.nominate(r, store.deadline_member(effect.kind, state.call_id, effect.party), effect.at)
    for effect in effects:
        if isinstance(effect, machine.Record):
            _record(ctx, state, effect.kind)
    for effect in effects:
        if isinstance(effect, machine.ToUsers):
            _send_to_users(ctx, effect.event, _wire(effect.data), list(effect.user_ids), effect.except_party)
        elif isinstance(effect, machine.ToParties):
            _send_to_parties(ctx, effect.event, _wire(effect.data), list(effect.parties))
        elif isinstance(effect, machine.Missed):
            try:
                missed.notify_missed_call(ctx, call_record(state), list(effect.user_ids))
            except Exception:
                log.exception("missed-call hook failed for %s", state.call_id)


def _wire(data: dict) -> dict:
    if isinstance(data.get("expires_at"), (int, float)):
        data = {**data, "expires_at": timeutil.iso(data["expires_at"])}
    return data


def _wire_parties(parties: list[Party]) -> list[dict]:
    return [{"user_id": p.user_id, "device_id": p.device_id} for p in parties]


def call_record(state: CallState) -> dict:
    """The call as the Kafka events and hooks carry it."""
    return {
        "call_id": state.call_id, "conversation_id": state.conversation_id, "group": state.group,
        "media": state.media, "status": state.status,
        "caller": {"user_id": state.caller.user_id, "device_id": state.caller.device_id},
        "callee_ids": state.callee_ids, "busy_ids": state.busy_ids,
        "participants": _wire_parties(state.ever_joined),
        "created_at": timeutil.iso(state.created_at), "answered_at": timeutil.iso(state.answered_at),
        "ended_at": timeutil.iso(state.ended_at), "end_reason": state.end_reason,
        "ended_by": state.ended_by, "duration_s": state.duration_s,
    }


def _dt(ts: float | None):
    return timeutil.utc_datetime(ts) if ts is not None else None


def _record(ctx: Context, state: CallState, kind: str) -> None:
    doc = Call(
        id=state.call_id, conversation_id=state.conversation_id, group=state.group, media=state.media,
        caller_id=state.caller.user_id, caller_device_id=state.caller.device_id,
        callee_ids=state.callee_ids, busy_ids=state.busy_ids,
        participants=[CallParticipant(user_id=p.user_id, device_id=p.device_id) for p in state.ever_joined],
        status=state.status, created_at=_dt(state.created_at), answered_at=_dt(state.answered_at),
        ended_at=_dt(state.ended_at), end_reason=state.end_reason, ended_by=state.ended_by,
        duration_s=state.duration_s,
    )
    try:
        doc.save(validate=False)      # whole-document upsert: a repeat is harmless
    except DB_DOWN_ERRORS as exc:
        # Redis holds the truth of a call; the record is rewritten whole by the next
        # transition, so a write lost while the database is down is repaired then.
        # The call itself goes on, and its events still reach Kafka.
        log.warning("call %s: record not written: %s", state.call_id, exc)
    if kind == "updated":
        return
    when = {"started": state.created_at, "answered": state.answered_at, "ended": state.ended_at}[kind]
    outbox.append(ctx.redis, envelope.make(
        f"call.{kind}", ctx.source, {"call": call_record(state)},
        user_id=state.caller.user_id, conversation_id=state.conversation_id,
        event_id=envelope.stable_event_id(f"call.{kind}", state.call_id), occurred_at=when,
    ))


def _device_connected(ctx: Context, user_id: str, device_id: str) -> bool:
    """Whether the device has a socket on a live node (a dead node's entries do not count)."""
    conns = [c for c in connections.of_user(ctx.redis, user_id) if c.device_id == device_id]
    if not conns:
        return False
    silent = set(connections.silent_nodes(ctx.redis, ctx.clock(), ctx.settings.presence_node_timeout_s))
    return any(c.node_id not in silent for c in conns)


def devices_on_dead_nodes(ctx: Context) -> int:
    """Start the reconnect grace of call participants whose node died (no disconnect
    hook ran for them), for nodes the presence sweep has not settled yet.
    Returns how many graces were started."""
    r = ctx.redis
    started = 0
    for node_id in connections.silent_nodes(r, ctx.clock(), ctx.settings.presence_node_timeout_s):
        started += devices_gone(ctx, set(connections.of_node(r, node_id).values()))
    return started


def devices_gone(ctx: Context, user_ids) -> int:
    """These users' sockets on a dead or restarted node are gone: start the reconnect
    grace of each of their call devices that has no socket left anywhere.

    Called by the call sweep and by the node settlement (realtime.actions.presence),
    whichever sees the dead node first."""
    r = ctx.redis
    started = 0
    for user_id in user_ids:
        call_id = store.call_of_user(r, user_id)
        state = store.load(r, call_id) if call_id else None
        if state is None or state.status == machine.ENDED:
            continue
        started += _start_graces(ctx, state, state.participant_devices(user_id))
    return started


def devices_without_socket(ctx: Context) -> int:
    """Start the reconnect grace of every live call's participant device that has no
    socket anywhere and no grace running. The edge starts it when the device's last
    socket closes, in its disconnect batch; a batch given up after its retries (Redis
    out for longer than they last) would leave the device in the call for good.
    Returns how many graces were started."""
    r = ctx.redis
    started = 0
    for call_id in store.live_call_ids(r):
        state = store.load(r, call_id)
        if state is None or state.status == machine.ENDED:
            store.forget_live(r, call_id)
            continue
        started += _start_graces(ctx, state, state.participants)
    return started


def _start_graces(ctx: Context, state: CallState, parties: list[Party]) -> int:
    """DeviceGone for each of these parties with no socket and no grace yet (the
    machine re-checks under the call's lock; the grace itself re-checks the socket)."""
    started = 0
    for party in parties:
        if party.key in state.gone_since or _device_connected(ctx, party.user_id, party.device_id):
            continue
        try:
            _transition(ctx, state.call_id, None, machine.DeviceGone(party))
            started += 1
        except ApiError as exc:
            log.info("call %s: socketless device %s not recorded: %s", state.call_id, party, exc.message)
    return started


def _send_to_users(ctx: Context, event: str, data: dict, user_ids: list[str],
                   except_party: Party | None) -> None:
    if except_party is None:
        for user_id in user_ids:
            ctx.emit(event, data, room=keys.user_room(user_id))
        return
    # Every socket of these users but the excepted device's: per socket.
    for user_id, conns in connections.of_users(ctx.redis, user_ids).items():
        for conn in conns:
            if not (conn.user_id == except_party.user_id and conn.device_id == except_party.device_id):
                ctx.emit(event, data, room=conn.sid)


def _send_to_parties(ctx: Context, event: str, data: dict, parties: list[Party]) -> None:
    if not parties:
        return
    wanted = {(p.user_id, p.device_id) for p in parties}
    user_ids = list(dict.fromkeys(p.user_id for p in parties))
    for user_id, conns in connections.of_users(ctx.redis, user_ids).items():
        for conn in conns:
            if (user_id, conn.device_id) in wanted:
                ctx.emit(event, data, room=conn.sid)
