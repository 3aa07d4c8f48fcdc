"""`message_read`, `receipts_get`, `unread_get` (PROTOCOL §7).

message_read only records the read in Redis and acks; workers aggregate
(workers/receipts.py) and send `read_receipt` / `unread_update`.
"""
from __future__ import annotations

import logging

import redis

from realtime import validation
from realtime.actions import conversations, notifications, receipts
from realtime.errors import ApiError

from ..dispatch import EventSpec

log = logging.getLogger(__name__)


def message_read(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    seq = validation.integer(data, "seq", minimum=0)
    private = validation.boolean(data, "private")
    if conversation_id not in session.conversations:
        # A joined socket's membership was checked at join_room; others are checked here.
        conversations.check_member(conversation_id, session.user_id)
    actor = node.actor(session)
    receipts.record_read(node.ctx, actor, conversation_id, seq, private)
    try:
        notifications.after_read(node.ctx, actor, conversation_id)
    except Exception as exc:  # broker or Redis down: the read itself is recorded
        log.warning("could not ask for a push clear after a read: %s", exc)
    return {}


def receipts_get(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    return {"watermarks": receipts.receipts_get(session.user_id, conversation_id, node.ctx.redis)}


def unread_get(node, session, data: dict) -> dict:
    return {"conversations": receipts.unread_get(session.user_id, node.ctx.redis)}


def _after_send(node, session, message: dict) -> None:
    try:
        receipts.record_own_send(node.ctx, session.user_id, message["conversation_id"], message["seq"])
    except (redis.RedisError, ApiError) as exc:
        # The message is stored; only the sender's unread count lags until its next read.
        log.warning("could not record an own send as read: %s", exc)


def setup(node) -> None:
    node.after_send_hooks.append(_after_send)


EVENTS = [
    EventSpec("message_read", message_read),
    EventSpec("receipts_get", receipts_get),
    EventSpec("unread_get", unread_get),
]
