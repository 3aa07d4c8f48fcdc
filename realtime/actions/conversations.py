"""Conversation lookups and membership checks."""
from __future__ import annotations

import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Iterator

import redis
from mongoengine.errors import MongoEngineException
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from .. import keys
from ..db import DB_DOWN_ERRORS, unavailable
from ..errors import FORBIDDEN, NOT_FOUND, UNAVAILABLE, ApiError
from ..models import Conversation, Message
from ..redis_client import script

log = logging.getLogger(__name__)


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


def current_last_seqs(r: redis.Redis, stored: dict[str, int]) -> dict[str, int]:
    """Each conversation's last seq as readers must see it: the larger of the stored
    `last_seq` and the Redis seq hint.

    A send sets the hint in its turn, before the emit; `last_seq` follows within a
    sweep tick (advance_due_last_seqs). In between, a member may already hold the
    message; whatever they ask next (`join_room`, `sync`, receipts, unread, the badge)
    must count it."""
    if not stored:
        return {}
    ids = list(stored)
    try:
        hints = r.mget([keys.seq_hint(c) for c in ids])
    except redis.RedisError as exc:
        raise ApiError(UNAVAILABLE, "service unavailable") from exc
    return {c: max(stored[c], int(hint)) if hint is not None else stored[c]
            for c, hint in zip(ids, hints)}


def current_last_seq(r: redis.Redis, conversation_id: str, stored: int) -> int:
    return current_last_seqs(r, {conversation_id: stored})[conversation_id]


def advance_last_seq(conversation_id: str, seq: int) -> None:
    """Move the conversation's last_seq hint forward only."""
    try:
        Conversation.objects(id=conversation_id).update_one(max__last_seq=seq)
    except (MongoEngineException, *DB_DOWN_ERRORS):
        # Only a hint: a stale value is repaired by the next insert (see messages.send).
        pass


# --- a send's turn in its conversation ---------------------------------------------------
# Senders of one conversation take turns: a short Redis lock, held for the seq's choice and
# the insert (messages.send). Taking it also reads the seq hint, and ending it writes the
# new hint, notes the conversation due for the sweep and releases the lock: two round
# trips, where a lock, a read, a write and an unlock took four.

# KEYS: lock, seq hint. ARGV: token, lock TTL (ms). Returns {taken, hint or ''}.
_TAKE_SEQ_TURN = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2]) or ''}
end
return {0, ''}
"""

# KEYS: lock, seq hint, due set. ARGV: token, seq, hint TTL (s), conversation id. The hint
# only moves forward: a turn that outlived its lock must not take back a later send's.
_END_SEQ_TURN = """
local hint = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if tonumber(ARGV[2]) > hint then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
else
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: lock. ARGV: token. Releases the lock if it is still this turn's.
_RELEASE_SEQ_TURN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class SeqTurn:
    conversation_id: str
    token: str
    last_seq: int                 # the seq to build on: the Redis hint, else the stored one
    sent_seq: int | None = None   # set by the holder once its message is stored


def _take_seq_turn(r: redis.Redis, conversation_id: str, stored_last_seq: int, ttl_s: float,
                   wait_s: float, poll_s: float) -> SeqTurn:
    token = secrets.token_hex(8)
    take = script(r, _TAKE_SEQ_TURN)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            taken, hint = take(keys=[keys.seq_lock(conversation_id), keys.seq_hint(conversation_id)],
                               args=[token, int(ttl_s * 1000)])
        except redis.RedisError as exc:
            raise ApiError(UNAVAILABLE, "service unavailable") from exc
        if taken:
            return SeqTurn(conversation_id, token, int(hint) if hint else stored_last_seq)
        if time.monotonic() >= deadline:
            raise ApiError(UNAVAILABLE, "conversation too busy, retry")
        time.sleep(poll_s)   # green under eventlet


def _end_seq_turn(r: redis.Redis, turn: SeqTurn, hint_ttl_s: int) -> None:
    script(r, _END_SEQ_TURN)(
        keys=[keys.seq_lock(turn.conversation_id), keys.seq_hint(turn.conversation_id), keys.LAST_SEQ_DUE],
        args=[turn.token, turn.sent_seq, hint_ttl_s, turn.conversation_id])


@contextlib.contextmanager
def seq_turn(r: redis.Redis, conversation_id: str, stored_last_seq: int, *, ttl_s: float, wait_s: float,
             poll_s: float, hint_ttl_s: int) -> Iterator[SeqTurn]:
    """Hold the conversation's send turn. `stored_last_seq` (the conversation document's)
    stands in for an expired hint. Raises ApiError(unavailable) when Redis fails or the
    turn stays taken for `wait_s`.

    At the end, a holder that set `sent_seq` has its seq noted (hint, sweep); if Redis
    refuses that, `last_seq` is written here instead, as the only copy readers can see,
    and the lock is left to its TTL. A holder that did not (a retry, a failure) just
    releases the lock."""
    turn = _take_seq_turn(r, conversation_id, stored_last_seq, ttl_s, wait_s, poll_s)
    try:
        yield turn
    finally:
        if turn.sent_seq is not None:
            try:
                _end_seq_turn(r, turn, hint_ttl_s)
            except redis.RedisError:
                advance_last_seq(conversation_id, turn.sent_seq)
        else:
            try:
                script(r, _RELEASE_SEQ_TURN)(keys=[keys.seq_lock(conversation_id)], args=[turn.token])
            except redis.RedisError:
                pass   # the TTL frees it


# --- last_seq, advanced by a sweep rather than by each send -----------------------------
# Why: every `$max` rewrites the whole conversation document (MongoDB's WiredTiger and
# FerretDB alike), tens of KB for a big group, once per message. Sends only note the
# conversation as due (as their turn ends, seq_turn above); a beat sweep writes each due
# conversation's newest hint once per tick, however many messages it got.

# Conversations written per bulk write of a sweep.
LAST_SEQ_SWEEP_CHUNK = 500

# Take the due set for a run, unless an earlier run's is still there (it died midway).
_TAKE_DUE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
  redis.call('RENAME', KEYS[1], KEYS[2])
end
return redis.call('SMEMBERS', KEYS[2])
"""


def advance_due_last_seqs(r: redis.Redis) -> int:
    """Advance `last_seq` of every due conversation to its seq hint ($max: never back,
    and a redone run writes the same). Returns how many conversations were due.

    The caller holds the sweep lock. A failed write leaves the taken set for the next
    run; a conversation whose hint expired meanwhile is skipped (its next send repairs
    `last_seq`, see messages.send)."""
    due = script(r, _TAKE_DUE)(keys=[keys.LAST_SEQ_DUE, keys.LAST_SEQ_APPLYING])
    if not due:
        return 0
    collection = Conversation._get_collection()
    for i in range(0, len(due), LAST_SEQ_SWEEP_CHUNK):
        chunk = due[i:i + LAST_SEQ_SWEEP_CHUNK]
        hints = r.mget([keys.seq_hint(c) for c in chunk])
        updates = [UpdateOne({"_id": c}, {"$max": {"last_seq": int(h)}})
                   for c, h in zip(chunk, hints) if h is not None]
        if updates:
            try:
                collection.bulk_write(updates, ordered=False)
            except DB_DOWN_ERRORS as exc:
                raise unavailable(exc) from exc  # the taken set waits for the next run
            except PyMongoError as exc:
                # Refused, not down: redoing would refuse again and hold up every
                # conversation due after these. Readers still see the hints.
                log.error("last_seq sweep: %d conversations not advanced: %s", len(updates), exc)
    r.delete(keys.LAST_SEQ_APPLYING)
    return len(due)
