"""`join_room` / `leave_room` (PROTOCOL §4). Room names are internal."""
from __future__ import annotations

from realtime import keys, validation
from realtime.actions import conversations
from realtime.errors import CONFLICT, ApiError

from ..dispatch import EventSpec


def join_room(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    conv = conversations.check_member(conversation_id, session.user_id)
    if (conversation_id not in session.conversations
            and len(session.conversations) >= node.settings.max_rooms_per_socket):
        raise ApiError(CONFLICT, f"at most {node.settings.max_rooms_per_socket} joined rooms per socket")
    if conversation_id not in session.conversations:
        node.sio.enter_room(session.sid, keys.conversation_room(conversation_id))
        session.conversations.add(conversation_id)
        node.save_connection(session)
    return {"conversation_id": conversation_id,
            "last_seq": conversations.current_last_seq(node.ctx.redis, conversation_id, conv.last_seq)}


def leave_room(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    if conversation_id in session.conversations:
        node.sio.leave_room(session.sid, keys.conversation_room(conversation_id))
        session.conversations.discard(conversation_id)
        node.save_connection(session)
    return {"conversation_id": conversation_id}


EVENTS = [EventSpec("join_room", join_room), EventSpec("leave_room", leave_room)]
