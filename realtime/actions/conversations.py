"""Conversation lookups and membership checks."""
from __future__ import annotations

from dataclasses import dataclass

import redis
from mongoengine.errors import MongoEngineException

from .. import keys
from ..db import DB_DOWN_ERRORS, unavailable
from ..errors import FORBIDDEN, NOT_FOUND, UNAVAILABLE, ApiError
from ..models import Conversation, Message


def load(conversation_id: str, fields: tuple[str, ...] = ("kind", "members", "last_seq")) -> Conversation:
    try:
        conv = Conversation.objects(id=conversation_id).only(*fields).first()
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    if conv is None:
        raise ApiError(NOT_FOUND, "conversation not found")
    return conv


def load_for_member(conversation_id: str, user_id: str) -> Conversation:
    conv = load(conversation_id)
    if user_id not in (conv.members or []):
        raise ApiError(FORBIDDEN, "not a member of this conversation")
    return conv


@dataclass(frozen=True)
class Membership:
    conversation_id: str
    kind: str | None
    last_seq: int


def check_member(conversation_id: str, user_id: str) -> Membership:
    """The conversation's kind and last_seq hint, when `user_id` is a member.

    A read by _id alone (a filter on `members` too makes FerretDB scan the whole
    collection: 80-120 ms here against 10 ms), decoded by pymongo's C extension
    rather than into a mongoengine document: in a group of thousands the member
    list is most of the document and most of the decoding time."""
    try:
        doc = Conversation._get_collection().find_one(
            {"_id": conversation_id}, {"kind": 1, "last_seq": 1, "members": 1})
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    if doc is None:
        raise ApiError(NOT_FOUND, "conversation not found")
    if user_id not in (doc.get("members") or ()):
        raise ApiError(FORBIDDEN, "not a member of this conversation")
    return Membership(conversation_id, doc.get("kind"), doc.get("last_seq") or 0)


def member_conversations(user_id: str, conversation_ids: list[str]) -> dict[str, Conversation]:
    """The subset of `conversation_ids` that `user_id` is a member of."""
    if not conversation_ids:
        return {}
    try:
        found = Conversation.objects(id__in=conversation_ids, members=user_id).only("kind", "members", "last_seq")
        return {conv.id: conv for conv in found}
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc


def stored_last_seq(conversation_id: str) -> int:
    """The highest seq actually stored (slow path: used when the hint is stale)."""
    try:
        top = Message.objects(conversation_id=conversation_id).order_by("-seq").only("seq").first()
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    return top.seq if top else 0


def last_seq_hint(r: redis.Redis, conversation_id: str) -> int:
    """The last seq this layer assigned in the conversation (Redis, set by each send),
    else the conversation's last_seq (MongoDB). A hint: the unique index on
    (conversation_id, seq) is the guarantee."""
    try:
        raw = r.get(keys.seq_hint(conversation_id))
    except redis.RedisError as exc:
        raise ApiError(UNAVAILABLE, "service unavailable") from exc
    if raw is not None:
        return int(raw)
    return load(conversation_id, ("last_seq",)).last_seq or 0


def advance_last_seq(conversation_id: str, seq: int) -> None:
    """Move the conversation's last_seq hint forward only."""
    try:
        Conversation.objects(id=conversation_id).update_one(max__last_seq=seq)
    except (MongoEngineException, *DB_DOWN_ERRORS):
        # Only a hint: a stale value is repaired by the next insert (see messages.send).
        pass
