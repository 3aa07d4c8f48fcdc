"""Read receipts and unread counts (PROTOCOL §7).

The edge only records a read in Redis (`record_read`, one Lua call) and acks; a
beat-driven worker aggregates (workers/receipts.py) and calls `apply` for each
(conversation, user) that moved: one MongoDB write ($max, so never backwards and
idempotent), the `receipt.updated` envelope, then `read_receipt` to the room
(public reads) and `unread_update` to the reader's devices.

Redis keys (realtime.keys): READS_PENDING (reads not yet aggregated),
READS_FLUSHING (targets being applied), reads_flushed(pair) (the window).
"""
from __future__ import annotations

import logging

import redis
from pymongo.errors import DuplicateKeyError

from .. import envelope, keys, outbox, receipts_policy, timeutil
from ..redis_client import script
from ..db import DB_DOWN_ERRORS, unavailable
from ..models import Conversation, ReadState
from ..receipts_policy import PendingRead, StoredRead, Target
from . import conversations
from .context import Actor, Context

log = logging.getLogger(__name__)

# Merge one read into the pending entry of a pair, with max.
_RECORD = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local e
if raw then e = cjson.decode(raw) else e = {pub = -1, prv = -1, at = 0} end
local seq = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
if ARGV[3] == '0' and seq > e.pub then e.pub = seq; e.at = now end
if seq > e.prv then e.prv = seq; e.at = now end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(e))
return 1
"""
# Stage an aggregation: drop each pending entry that did not change since it was
# read, and record its target (if any) in the flushing hash, atomically.
# ARGV: member, snapshot, target ('' for none), repeated.
_STAGE = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i]); n = n + 1
  end
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2]) end
end
return n
"""
# Forget applied targets (only those not replaced by a newer one meanwhile).
_DONE = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
"""


# --- edge side ----------------------------------------------------------------------

def record_read(ctx: Context, actor: Actor, conversation_id: str, seq: int, private: bool) -> None:
    """message_read: O(1) Redis; membership is the caller's to check."""
    now_ms = int(ctx.clock() * 1000)
    script(ctx.redis, _RECORD)(keys=[keys.READS_PENDING],
                               args=[keys.pair(conversation_id, actor.user_id), seq, int(private), now_ms])


def record_own_send(ctx: Context, user_id: str, conversation_id: str, seq: int) -> None:
    """A sent message counts as read by its sender (own messages are never unread):
    a private read up to the message's `seq`. Not up to the conversation's last seq,
    which a message of someone else stored meanwhile may have moved past it: the
    sender has not seen that one."""
    record_read(ctx, Actor(user_id=user_id), conversation_id, seq, private=True)


# --- stored state ------------------------------------------------------------------------

def last_seqs(r: redis.Redis, conversation_ids: list[str]) -> dict[str, int]:
    if not conversation_ids:
        return {}
    try:
        stored = {c.id: c.last_seq or 0 for c in
                  Conversation.objects(id__in=conversation_ids).only("last_seq").batch_size(SINGLE_BATCH)}
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    return conversations.current_last_seqs(r, stored)


# Pairs per query, and a first batch that holds every answer: an open cursor
# between batches can deadlock FerretDB 1.24 (see `write`).
STORED_QUERY_CHUNK = 500
SINGLE_BATCH = 10_000


def stored_reads(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], StoredRead]:
    out: dict[tuple[str, str], StoredRead] = {}
    collection = ReadState._get_collection()
    try:
        for i in range(0, len(pairs), STORED_QUERY_CHUNK):
            ids = [keys.pair(c, u) for c, u in pairs[i:i + STORED_QUERY_CHUNK]]
            for doc in collection.find({"_id": {"$in": ids}},
                                       {"conversation_id": 1, "user_id": 1, "seq": 1, "private_seq": 1},
                                       batch_size=SINGLE_BATCH):
                out[(doc["conversation_id"], doc["user_id"])] = StoredRead(
                    seq=doc.get("seq") or 0, private_seq=doc.get("private_seq") or 0)
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    return out


def _not_aggregated(r: redis.Redis, members: list[str]) -> dict[str, tuple[PendingRead | None, Target | None]]:
    """Pending reads and in-flight targets of these pairs (read-your-writes).

    Read before the database: a read moves from pending to flushing (one script), is
    written to the database, and only then leaves flushing. Read in that same order
    (pending, flushing, database), every read is seen in at least one of the three; the
    other order can miss one whose aggregation ran between the two reads."""
    if not members:
        return {}
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.READS_PENDING, members)
    pipe.hmget(keys.READS_FLUSHING, members)
    pending, flushing = pipe.execute()
    return {m: (PendingRead.decode(p) if p else None, Target.decode(f) if f else None)
            for m, p, f in zip(members, pending, flushing)}


def _effective(stored: StoredRead, pending: PendingRead | None, target: Target | None,
               last_seq: int, conversation_id: str, user_id: str) -> StoredRead:
    if target is not None:
        stored = StoredRead(seq=max(stored.seq, target.seq), private_seq=max(stored.private_seq, target.private_seq))
        last_seq = max(last_seq, target.last_seq)
    return receipts_policy.effective(stored, pending, last_seq)


def receipts_get(user_id: str, conversation_id: str, r: redis.Redis) -> dict[str, int]:
    conv = conversations.load_for_member(conversation_id, user_id)
    members = list(conv.members or [])
    last_seq = conversations.current_last_seq(r, conversation_id, conv.last_seq or 0)
    # Redis before the database: see _not_aggregated.
    extra = _not_aggregated(r, [keys.pair(conversation_id, m) for m in members])
    stored = stored_reads([(conversation_id, m) for m in members])
    watermarks = {}
    for member in members:
        pending, target = extra[keys.pair(conversation_id, member)]
        if pending is not None:
            pending = PendingRead(public_seq=pending.public_seq, private_seq=-1,
                                  read_at_ms=pending.read_at_ms)  # only public reads show
        state = _effective(stored.get((conversation_id, member), StoredRead()), pending, target,
                           last_seq, conversation_id, member)
        if state.seq > 0:
            watermarks[member] = state.seq
    return watermarks


def unread_get(user_id: str, r: redis.Redis) -> dict[str, int]:
    try:
        stored_last = {c.id: c.last_seq or 0 for c in
                       Conversation.objects(members=user_id).only("last_seq").batch_size(SINGLE_BATCH)}
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    convs = conversations.current_last_seqs(r, stored_last)
    ids = list(convs)
    # Redis before the database: see _not_aggregated.
    extra = _not_aggregated(r, [keys.pair(c, user_id) for c in ids])
    stored = {c: state for (c, _), state in stored_reads([(c, user_id) for c in ids]).items()}
    out = {}
    for conversation_id in ids:
        pending, target = extra[keys.pair(conversation_id, user_id)]
        state = _effective(stored.get(conversation_id, StoredRead()), pending, target,
                           convs[conversation_id], conversation_id, user_id)
        last_seq = max(convs[conversation_id], target.last_seq if target else 0)
        count = receipts_policy.unread(last_seq, state.private_seq)
        if count > 0:
            out[conversation_id] = count
    return out


# --- worker side: applying an aggregation --------------------------------------------------

def _event(ctx: Context, t: Target) -> envelope.Envelope:
    return envelope.make(
        "receipt.updated", ctx.source,
        {"conversation_id": t.conversation_id, "user_id": t.user_id, "seq": t.seq,
         "private_seq": t.private_seq, "read_at": timeutil.iso(t.read_at_ms / 1000),
         "unread": t.unread, "private": not t.public_advanced},
        user_id=t.user_id, conversation_id=t.conversation_id,
        # The same target always has the same id: a redone run duplicates, never differs.
        event_id=envelope.stable_event_id("receipt.updated", t.conversation_id, t.user_id,
                                          str(t.seq), str(t.private_seq)),
        occurred_at=t.read_at_ms / 1000,
    )


def write(targets: list[Target]) -> None:
    """One write per target, by `_id`; $max keeps it monotonic and idempotent.

    Not one bulk write: FerretDB 1.24 (SQLite) keeps every statement's cursor of a
    multi-statement update open until the command ends, and deadlocks when a
    collection or index is created meanwhile (seen as a hung database).
    """
    collection = ReadState._get_collection()
    try:
        for t in targets:
            change = {"$max": {"seq": t.seq, "private_seq": t.private_seq,
                               "read_at": timeutil.utc_datetime(t.read_at_ms / 1000)}}
            try:
                collection.update_one(
                    {"_id": keys.pair(t.conversation_id, t.user_id)},
                    dict(change, **{"$setOnInsert": {"conversation_id": t.conversation_id, "user_id": t.user_id}}),
                    upsert=True)
            except DuplicateKeyError:
                # A document of this pair written with another _id (by an older
                # version or another service): update that one.
                collection.update_one({"conversation_id": t.conversation_id, "user_id": t.user_id}, change)
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc


def announce(ctx: Context, targets: list[Target]) -> None:
    """Kafka envelopes, then the socket events."""
    outbox.append(ctx.redis, *[_event(ctx, t) for t in targets])
    for t in targets:
        if t.public_advanced:
            ctx.emit("read_receipt", {"conversation_id": t.conversation_id, "user_id": t.user_id,
                                      "seq": t.seq, "read_at": timeutil.iso(t.read_at_ms / 1000)},
                     room=keys.conversation_room(t.conversation_id))
        if t.private_advanced:
            ctx.emit("unread_update", {"conversation_id": t.conversation_id, "unread": t.unread,
                                       "last_read_seq": t.private_seq},
                     room=keys.user_room(t.user_id))

