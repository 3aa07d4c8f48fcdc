"""Call signaling events (PROTOCOL §10): initiate, answer, reject, end, join, leave, signal."""
from __future__ import annotations

import logging

from realtime import validation
from realtime.actions import calls
from realtime.calls import machine
from realtime.errors import ApiError, invalid

from ..dispatch import EventSpec

log = logging.getLogger(__name__)

MEDIA = ("audio", "video")


def _with_call_id(fn):
    """A `conflict` that names an existing call (glare) carries its id in the ack."""
    def handler(node, session, data: dict) -> dict:
        try:
            return fn(node, session, data)
        except ApiError as exc:
            call_id = getattr(exc, "call_id", None)
            if call_id is None:
                raise
            # The dispatcher merges a handler's result over {"ok": true}, so this
            # becomes the whole ack: {ok: false, error, call_id}.
            return {**exc.to_ack(), "call_id": call_id}
    return handler


def call_initiate(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    media = data.get("media", "audio")
    if media not in MEDIA:
        raise invalid("media must be 'audio' or 'video'")
    callee_ids = None
    if data.get("callee_ids") is not None:
        callee_ids = validation.id_list(data, "callee_ids", max_items=machine.MAX_PARTICIPANTS - 1)
        if not callee_ids:
            raise invalid("callee_ids must not be empty")
    sdp = data.get("sdp")
    calls.check_sdp_size(node.ctx, sdp)
    return calls.initiate(node.ctx, node.actor(session), conversation_id, media, callee_ids, sdp)


def call_answer(node, session, data: dict) -> dict:
    call_id = validation.identifier(data, "call_id")
    sdp = data.get("sdp")
    calls.check_sdp_size(node.ctx, sdp)
    return calls.answer(node.ctx, node.actor(session), call_id, sdp)


def call_reject(node, session, data: dict) -> dict:
    call_id = validation.identifier(data, "call_id")
    reason = data.get("reason", machine.DECLINED)
    if reason not in machine.REJECT_REASONS:
        raise invalid("reason must be 'declined' or 'busy'")
    calls.reject(node.ctx, node.actor(session), call_id, reason)
    return {}


def call_end(node, session, data: dict) -> dict:
    calls.end(node.ctx, node.actor(session), validation.identifier(data, "call_id"))
    return {}


def call_join(node, session, data: dict) -> dict:
    return calls.join(node.ctx, node.actor(session), validation.identifier(data, "call_id"))


def call_leave(node, session, data: dict) -> dict:
    calls.leave(node.ctx, node.actor(session), validation.identifier(data, "call_id"))
    return {}


def call_signal(node, session, data: dict) -> dict:
    call_id = validation.identifier(data, "call_id")
    to_user_id = validation.identifier(data, "to_user_id")
    to_device_id = validation.identifier(data, "to_device_id", required=False)
    kind = data.get("kind")
    if kind not in calls.SIGNAL_KINDS:
        raise invalid(f"kind must be one of {', '.join(calls.SIGNAL_KINDS)}")
    if "data" not in data:
        raise invalid("data is required")
    calls.signal(node.ctx, node.actor(session), call_id, to_user_id, to_device_id, kind, data["data"])
    return {}


def _on_disconnects(node, sessions: list) -> None:
    """Sockets closed (edge.disconnects): a call participant's reconnect grace starts if
    it was the device's last socket.

    A RedisError goes to the batcher, which calls again with the same list: each device
    done is removed from it first, so a retry does not start its grace again, later.
    A grace given up on after the retries is started later by the workers' reconcile
    of live calls (realtime.actions.calls.devices_without_socket, every 15 s): the
    device is unregistered and has no grace running."""
    in_call = calls.calls_of_users(node.ctx, list(dict.fromkeys(s.user_id for s in sessions)))
    if not in_call:
        return
    devices = dict.fromkeys((s.user_id, s.device_id) for s in sessions if s.user_id in in_call and s.device_id)
    for user_id, device_id in devices:
        calls.device_disconnected(node.ctx, user_id, device_id, in_call[user_id])
        sessions[:] = [s for s in sessions if (s.user_id, s.device_id) != (user_id, device_id)]


def setup(node) -> None:
    node.on_disconnect_batch_hooks.append(_on_disconnects)


EVENTS = [
    EventSpec("call_initiate", _with_call_id(call_initiate)),
    EventSpec("call_answer", call_answer),
    EventSpec("call_reject", call_reject),
    EventSpec("call_end", call_end),
    EventSpec("call_join", call_join),
    EventSpec("call_leave", call_leave),
    EventSpec("call_signal", call_signal),
]
