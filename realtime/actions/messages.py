"""Messages: send, edit, delete, sync, history (PROTOCOL §4), and the fan-out of
messages the message service produced to Kafka.

`seq` is gapless per conversation without transactions: a message is inserted at
`last_seq + 1` and the unique (conversation_id, seq) index refuses a taken slot;
on refusal the writer moves to the next slot. Since the `last_seq` hint never
exceeds the highest stored seq, the first free slot found is always max + 1.
"""
from __future__ import annotations

import hashlib
import time

import redis
from pymongo.errors import DuplicateKeyError

from .. import envelope, keys, outbox, timeutil
from ..db import DB_DOWN_ERRORS, unavailable
from ..errors import CONFLICT, FORBIDDEN, NOT_FOUND, UNAVAILABLE, ApiError
from ..models import Message
from . import conversations
from .context import Actor, Context

# Slots tried before giving up on one send. Each refusal means another message
# won the slot, so reaching this needs sustained contention on one conversation.
MAX_SEQ_ATTEMPTS = 50
# The per-conversation send turn: held for one insert and one hint update.
SEQ_LOCK_TTL_S = 5.0
SEQ_LOCK_WAIT_S = 4.0
# Seconds between two tries for a turn that is taken.
SEQ_LOCK_POLL_S = 0.002
# Consecutive slot refusals after which the last_seq hint is treated as stale.
STALE_HINT_AFTER_CONFLICTS = 8
# Seconds the Redis seq hint lives after a conversation's last send here; a quiet
# conversation's next send reads last_seq from MongoDB instead.
SEQ_HINT_TTL_S = 24 * 3600
# Message ids: 14 bytes of BLAKE2b, 28 hex characters (112 bits: no collision to fear).
MESSAGE_ID_BYTES = 14
SYNC_PAGE = 300
SYNC_MAX_CONVERSATIONS = 500
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 100


def message_id_for(sender_id: str, client_msg_id: str) -> str:
    """The id of the message a sender's `client_msg_id` makes: the same for every retry,
    so the insert itself is the idempotency check (the `_id` index refuses a second
    copy). Length-prefixed, so no (sender, id) pair can collide with another."""
    key = f"{len(sender_id)}:{sender_id}:{client_msg_id}".encode()
    return hashlib.blake2b(key, digest_size=MESSAGE_ID_BYTES).hexdigest()


def _created_event(ctx: Context, message: Message) -> envelope.Envelope:
    return envelope.make(
        "message.created", ctx.source, {"message": message.to_wire()},
        user_id=message.sender_id, conversation_id=message.conversation_id,
        event_id=envelope.stable_event_id("message.created", message.id),
        occurred_at=timeutil.from_iso(timeutil.iso(message.created_at)),
    )


def _find(message_id: str) -> Message | None:
    try:
        return Message.objects(id=message_id).first()
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc


def send(ctx: Context, actor: Actor, conversation_id: str, client_msg_id: str, body: str,
         reply_to: str | None) -> tuple[dict, bool]:
    """Store and announce a message. Returns (wire message, created_now)."""
    membership = conversations.check_member(conversation_id, actor.user_id)
    message = Message(
        id=message_id_for(actor.user_id, client_msg_id), conversation_id=conversation_id,
        sender_id=actor.user_id, body=body, reply_to=reply_to, client_msg_id=client_msg_id,
        created_at=timeutil.utc_datetime(ctx.clock()), edited_at=None, deleted=False,
    )
    # Senders of one conversation take turns (a short Redis lock): concurrent inserts
    # racing for the same seq make the database retry conflicting writes (FerretDB on
    # SQLite stalled for seconds). The unique index below stays the guarantee, also
    # for writers that do not take this lock (the message service).
    # The turn covers the seq's choice and the insert only (the hint read with the lock,
    # one insert, the hint written with the unlock): the outbox and the emit follow
    # outside it, and the conversation's last_seq is a sweep's
    # (conversations.advance_due_last_seqs). The contract orders one sender's messages
    # (their sends are handled one after another), not different senders' deliveries.
    with conversations.seq_turn(ctx.redis, conversation_id, membership.last_seq, ttl_s=SEQ_LOCK_TTL_S,
                                wait_s=SEQ_LOCK_WAIT_S, poll_s=SEQ_LOCK_POLL_S,
                                hint_ttl_s=SEQ_HINT_TTL_S) as turn:
        existing = _insert_with_next_seq(message, turn.last_seq)
        if existing is None:
            turn.sent_seq = message.seq
    if existing is None:
        return _announce(ctx, actor, message), True
    if existing.conversation_id != conversation_id:
        raise ApiError(CONFLICT, "client_msg_id was already used in another conversation")
    # A retry: same message, nothing new on the sockets. The envelope is appended
    # again (same event_id) in case the first attempt died before reaching the
    # outbox; Kafka consumers deduplicate by event_id.
    outbox.append(ctx.redis, _created_event(ctx, existing))
    return existing.to_wire(), False


def _insert_with_next_seq(message: Message, last_seq: int) -> Message | None:
    """Insert `message` at the first free seq after `last_seq`. Returns the stored
    message instead when this very send (same id: an earlier attempt, or a concurrent
    retry) is stored already."""
    conversation_id = message.conversation_id
    collection = Message._get_collection()
    document = message.to_document()
    seq = last_seq + 1
    for attempt in range(MAX_SEQ_ATTEMPTS):
        message.seq = document["seq"] = seq
        try:
            collection.insert_one(document)
            return None
        except DuplicateKeyError:
            stored = _find(message.id)
            if stored is not None:  # this very send, stored by an earlier attempt
                return stored
            # The slot is taken, usually by a concurrent sender: walk up one slot.
            # After several refusals in a row the hint is probably far behind (a
            # failed hint update, or messages the message service wrote), so ask
            # for the real maximum once; that query sorts, so it is not the default.
            if attempt + 1 == STALE_HINT_AFTER_CONFLICTS:
                seq = conversations.stored_last_seq(conversation_id) + 1
            else:
                seq += 1
        except DB_DOWN_ERRORS as exc:
            raise unavailable(exc) from exc
    raise ApiError(UNAVAILABLE, "conversation too busy, retry")


def _announce(ctx: Context, actor: Actor, message: Message) -> dict:
    """The Kafka event, then the emit. Nothing waits for the `last_seq` write: the seq
    hint set in the turn already counts the message, readers take the larger of it and
    `last_seq` (conversations.current_last_seqs), and a sweep writes `last_seq`
    (conversations.advance_due_last_seqs)."""
    conversation_id = message.conversation_id
    wire = message.to_wire()
    outbox.append(ctx.redis, _created_event(ctx, message))
    ctx.emit("message_new", {"message": wire}, room=keys.conversation_room(conversation_id),
             skip_sid=actor.sid)
    return wire


def _load_own(actor: Actor, message_id: str) -> Message:
    message = _find(message_id)
    if message is None or message.deleted:
        raise ApiError(NOT_FOUND, "message not found")
    if message.sender_id != actor.user_id:
        raise ApiError(FORBIDDEN, "only the sender may change a message")
    return message


def edit(ctx: Context, actor: Actor, message_id: str, body: str) -> dict:
    message = _load_own(actor, message_id)
    now = ctx.clock()
    edited_at = timeutil.utc_datetime(now)
    try:
        updated = Message.objects(id=message_id, deleted__ne=True).update_one(
            set__body=body, set__edited_at=edited_at)
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    if not updated:
        raise ApiError(NOT_FOUND, "message not found")
    message.body = body
    message.edited_at = edited_at
    wire = message.to_wire()
    outbox.append(ctx.redis, envelope.make(
        "message.updated", ctx.source, {"message": wire},
        user_id=actor.user_id, conversation_id=message.conversation_id,
        event_id=envelope.stable_event_id("message.updated", message.id, wire["edited_at"]),
        occurred_at=now,
    ))
    ctx.emit("message_updated", {"message": wire},
             room=keys.conversation_room(message.conversation_id), skip_sid=actor.sid)
    return wire


def delete(ctx: Context, actor: Actor, message_id: str) -> None:
    message = _find(message_id)
    if message is None:
        raise ApiError(NOT_FOUND, "message not found")
    if message.sender_id != actor.user_id:
        raise ApiError(FORBIDDEN, "only the sender may delete a message")
    if message.deleted:
        return  # idempotent: already a tombstone, already announced
    try:
        Message.objects(id=message_id).update_one(set__deleted=True, set__body=None)
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    message.deleted = True
    message.body = None
    now = ctx.clock()
    outbox.append(ctx.redis, envelope.make(
        "message.deleted", ctx.source, {"message": message.to_wire()},
        user_id=actor.user_id, conversation_id=message.conversation_id,
        event_id=envelope.stable_event_id("message.deleted", message.id),
        occurred_at=now,
    ))
    ctx.emit("message_deleted",
             {"conversation_id": message.conversation_id, "message_id": message.id, "seq": message.seq},
             room=keys.conversation_room(message.conversation_id), skip_sid=actor.sid)


def _page(conversation_id: str, after_seq: int, limit: int) -> list[Message]:
    try:
        return list(Message.objects(conversation_id=conversation_id, seq__gt=after_seq)
                    .order_by("seq").limit(limit))
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc


def sync(r: redis.Redis, user_id: str, positions: dict[str, int]) -> dict:
    """Messages after each given seq, for the conversations the user belongs to."""
    convs = conversations.member_conversations(user_id, list(positions))
    current = conversations.current_last_seqs(r, {c: conv.last_seq or 0 for c, conv in convs.items()})
    result = {}
    for conversation_id in convs:
        after = positions[conversation_id]
        page = _page(conversation_id, after, SYNC_PAGE + 1)
        more = len(page) > SYNC_PAGE
        page = page[:SYNC_PAGE]
        last_seq = current[conversation_id]
        if (more and last_seq <= page[-1].seq) or (page and page[-1].seq > last_seq):
            # The hint lags behind what is stored (messages written by the message
            # service, or a failed hint update): ask the messages themselves.
            last_seq = conversations.stored_last_seq(conversation_id)
        result[conversation_id] = {
            "messages": [m.to_wire() for m in page],
            "last_seq": last_seq,
            "recovered": not more,
        }
    return result


def history(user_id: str, conversation_id: str, before_seq: int | None, limit: int) -> list[dict]:
    conversations.check_member(conversation_id, user_id)
    query = {"conversation_id": conversation_id}
    if before_seq is not None:
        query["seq__lt"] = before_seq
    try:
        newest_first = list(Message.objects(**query).order_by("-seq").limit(limit))
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    return [m.to_wire() for m in reversed(newest_first)]


# --- Messages produced by the message service to Kafka -------------------------------

_EXTERNAL_EVENTS = {
    "message.created": "message_new",
    "message.updated": "message_updated",
    "message.deleted": "message_deleted",
}


def fan_out_external(ctx: Context, event: dict) -> bool:
    """Fan out one chat.messages envelope from another service, once per event_id.

    Returns True when it was emitted now, False when skipped (the layer's own
    event, a duplicate delivery, or not a message event).
    """
    socket_event = _EXTERNAL_EVENTS.get(event.get("type"))
    message = (event.get("data") or {}).get("message")
    event_id = event.get("event_id")
    if socket_event is None or not isinstance(message, dict) or not isinstance(event_id, str):
        return False
    if envelope.is_own_source(event.get("source")):
        return False  # already fanned out by the edge that made it
    conversation_id = message.get("conversation_id") or event.get("conversation_id")
    if not isinstance(conversation_id, str):
        return False
    # Claim the event id first: a crash between the claim and the emit loses one
    # fan-out, the opposite order would send it twice; clients recover with `sync`.
    if not ctx.redis.set(keys.fanout_done(event_id), int(time.time()), nx=True, ex=FANOUT_DEDUPE_TTL_S):
        return False
    if socket_event == "message_deleted":
        data = {"conversation_id": conversation_id, "message_id": message.get("id"), "seq": message.get("seq")}
    else:
        data = {"message": message}
    ctx.emit(socket_event, data, room=keys.conversation_room(conversation_id))
    return True


# Kafka redelivers within the consumer group's session; a week covers any replay
# from a committed offset after an outage.
FANOUT_DEDUPE_TTL_S = 7 * 24 * 3600
