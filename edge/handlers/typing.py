"""`typing_start` / `typing_stop` (PROTOCOL §6), and the ends of typing the edge
sees: a message sent, the last socket of the typist in the room gone, the expiry.

Only sockets that joined the conversation may type (membership was checked at
join_room), so typing costs no database read.
"""
from __future__ import annotations

import logging

import redis

from realtime import connections, keys, validation
from realtime.actions import typing
from realtime.errors import FORBIDDEN, ApiError

from ..dispatch import EventSpec

log = logging.getLogger(__name__)

DEADLINE_KIND = "typing_expiry"


def _joined_conversation(session, data: dict) -> str:
    conversation_id = validation.identifier(data, "conversation_id")
    if conversation_id not in session.conversations:
        raise ApiError(FORBIDDEN, "join the conversation first")
    return conversation_id


def typing_start(node, session, data: dict) -> dict:
    conversation_id = _joined_conversation(session, data)
    started, deadline = typing.start(node.ctx, node.actor(session), conversation_id)
    if started:
        # This node's timer; the beat sweep covers the case of this node dying.
        node.deadlines.schedule(deadline, DEADLINE_KIND, keys.pair(conversation_id, session.user_id))
    return {}


def typing_stop(node, session, data: dict) -> dict:
    conversation_id = _joined_conversation(session, data)
    typing.stop(node.ctx, session.user_id, conversation_id)
    return {}


def _on_deadline(node, member: str, now: float) -> None:
    conversation_id, user_id = keys.split_pair(member)
    _stopped, current = typing.expire(node.ctx, conversation_id, user_id, now)
    if current is not None:
        # Refreshed since the timer was set: look again at the new deadline.
        node.deadlines.schedule(current, DEADLINE_KIND, member)


def _after_send(node, session, message: dict) -> None:
    try:
        typing.stop(node.ctx, session.user_id, message["conversation_id"])
    except redis.RedisError as exc:
        # The message is stored; the indicator then ends by expiry.
        log.warning("could not end typing after a send: %s", exc)


def _on_disconnects(node, sessions) -> None:
    """Sockets closed (edge.disconnects): typing ends in each conversation where the user
    has no socket left in the room. A RedisError goes to the batcher, which retries (a
    repeated stop finds nothing to stop); typing it gives up on ends by expiry."""
    closed = [s for s in sessions if s.conversations]
    if not closed:
        return
    # The sockets are unregistered already: these are the users' remaining ones.
    remaining = connections.of_users(node.ctx.redis, list(dict.fromkeys(s.user_id for s in closed)))
    stops = dict.fromkeys((s.user_id, conversation_id)
                          for s in closed for conversation_id in sorted(s.conversations)
                          if not connections.in_conversation(remaining[s.user_id], conversation_id))
    typing.stop_many(node.ctx, list(stops))


def setup(node) -> None:
    node.deadlines.on(DEADLINE_KIND, lambda member, now: _on_deadline(node, member, now))
    node.after_send_hooks.append(_after_send)
    node.on_disconnect_batch_hooks.append(_on_disconnects)


EVENTS = [EventSpec("typing_start", typing_start), EventSpec("typing_stop", typing_stop)]
