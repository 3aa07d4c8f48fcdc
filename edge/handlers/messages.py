"""Message events (PROTOCOL §4): send, edit, delete, sync, history."""
from __future__ import annotations

from realtime import validation
from realtime.actions import messages
from realtime.errors import TOO_LARGE, ApiError, invalid

from ..dispatch import EventSpec


def _body(node, data: dict) -> str:
    body = validation.string(data, "body")
    if len(body) > node.settings.max_body_chars:
        raise ApiError(TOO_LARGE, f"body over {node.settings.max_body_chars} characters")
    if not body:
        raise invalid("body must not be empty")
    return body


def message_send(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    client_msg_id = validation.identifier(data, "client_msg_id")
    body = _body(node, data)
    reply_to = validation.identifier(data, "reply_to", required=False)
    message, _created = messages.send(node.ctx, node.actor(session), conversation_id,
                                      client_msg_id, body, reply_to)
    for hook in node.after_send_hooks:
        hook(node, session, message)
    return {"message": message}


def message_edit(node, session, data: dict) -> dict:
    message_id = validation.identifier(data, "message_id")
    body = _body(node, data)
    return {"message": messages.edit(node.ctx, node.actor(session), message_id, body)}


def message_delete(node, session, data: dict) -> dict:
    message_id = validation.identifier(data, "message_id")
    messages.delete(node.ctx, node.actor(session), message_id)
    return {}


def sync(node, session, data: dict) -> dict:
    positions = data.get("conversations")
    if not isinstance(positions, dict):
        raise invalid("conversations must be an object {conversation_id: last_seq}")
    if len(positions) > messages.SYNC_MAX_CONVERSATIONS:
        raise invalid(f"at most {messages.SYNC_MAX_CONVERSATIONS} conversations per sync")
    checked: dict[str, int] = {}
    for conversation_id, last_seq in positions.items():
        validation.identifier({"conversation_id": conversation_id}, "conversation_id")
        checked[conversation_id] = validation.integer({"last_seq": last_seq}, "last_seq", minimum=0)
    return {"conversations": messages.sync(node.ctx.redis, session.user_id, checked)}


def history(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id")
    before_seq = validation.integer(data, "before_seq", required=False, minimum=1)
    limit = validation.integer(data, "limit", required=False, minimum=1,
                               default=messages.HISTORY_DEFAULT_LIMIT)
    limit = min(limit, messages.HISTORY_MAX_LIMIT)
    return {"messages": messages.history(session.user_id, conversation_id, before_seq, limit)}


EVENTS = [
    EventSpec("message_send", message_send),
    EventSpec("message_edit", message_edit),
    EventSpec("message_delete", message_delete),
    EventSpec("sync", sync),
    EventSpec("history", history),
]
