"""Typing indicators (PROTOCOL §6): start, stop, expiry. Redis only: typing never
touches MongoDB or Kafka, and a refresh costs one Redis round trip.

State: one zset (keys.TYPING_DEADLINES), member = the (conversation, user) pair,
score = deadline. Each change is one Lua script so that two devices or two nodes
acting at once announce each transition exactly once; the scripts implement the
decisions of realtime.typing_policy (the deadline and the "announce?" answers
come from there, the scripts only make read-and-write atomic).
"""
from __future__ import annotations

import logging

import redis

from .. import connections, keys, typing_policy
from ..redis_client import script
from .context import Actor, Context

log = logging.getLogger(__name__)

# Entries handled per sweep call; the rest wait for the next tick.
SWEEP_BATCH = 500

# Set the deadline, return the previous one (nil when not typing).
_SET_DEADLINE = """
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return previous
"""
# Remove the entry, return the deadline it had (nil when not typing).
_REMOVE = """
local previous = redis.call('ZSCORE', KEYS[1], ARGV[1])
if previous then redis.call('ZREM', KEYS[1], ARGV[1]) end
return previous
"""
# Remove the entry only if its deadline is <= now; return {removed, deadline}.
_EXPIRE = """
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current then return {0, false} end
if tonumber(current) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {1, current}
end
return {0, current}
"""


def _float(value) -> float | None:
    return None if value is None or value is False else float(value)


def _announce(ctx: Context, conversation_id: str, user_id: str, typing: bool,
              own_sids: list[str] | None = None) -> None:
    # To the room except every socket of the typist, on any node.
    if own_sids is None:
        own_sids = _sids_of_users(ctx, [user_id]).get(user_id, [])
    ctx.emit("user_typing", {"conversation_id": conversation_id, "user_id": user_id, "typing": typing},
             room=keys.conversation_room(conversation_id), skip_sid=own_sids or None)


def _sids_of_users(ctx: Context, user_ids: list[str]) -> dict[str, list[str]]:
    """Every socket of these users on any node (none when Redis fails: the typist's own
    sockets then get the announcement too, which beats losing it)."""
    try:
        return {user_id: [c.sid for c in conns]
                for user_id, conns in connections.of_users(ctx.redis, user_ids).items()}
    except redis.RedisError:
        return {}


def start(ctx: Context, actor: Actor, conversation_id: str) -> tuple[bool, float]:
    """typing_start (also a refresh). Returns (start announced, new deadline)."""
    now = ctx.clock()
    member = keys.pair(conversation_id, actor.user_id)
    new_deadline = typing_policy.deadline(now, ctx.settings)
    previous = _float(script(ctx.redis, _SET_DEADLINE)(keys=[keys.TYPING_DEADLINES],
                                                        args=[member, repr(new_deadline)]))
    transition = typing_policy.on_start(previous, now, ctx.settings)
    if transition.announce is not None:
        _announce(ctx, conversation_id, actor.user_id, transition.announce)
    return transition.announce is not None, new_deadline


def stop(ctx: Context, user_id: str, conversation_id: str) -> bool:
    """typing_stop, message_send, last socket gone. Returns whether a stop was announced."""
    member = keys.pair(conversation_id, user_id)
    previous = _float(script(ctx.redis, _REMOVE)(keys=[keys.TYPING_DEADLINES], args=[member]))
    transition = typing_policy.on_stop(previous)
    if transition.announce is not None:
        _announce(ctx, conversation_id, user_id, transition.announce)
        return True
    return False


def stop_many(ctx: Context, stops: list[tuple[str, str]]) -> int:
    """`stop` for many (user_id, conversation_id) pairs (the last sockets gone in a batch
    of disconnects): the removals in one pipeline, the typists' sockets the
    announcements skip in another. Returns how many stops were announced."""
    if not stops:
        return 0
    remove = script(ctx.redis, _REMOVE)
    pipe = ctx.redis.pipeline(transaction=False)
    for user_id, conversation_id in stops:
        remove(keys=[keys.TYPING_DEADLINES], args=[keys.pair(conversation_id, user_id)], client=pipe)
    announced = []
    for (user_id, conversation_id), previous in zip(stops, pipe.execute()):
        transition = typing_policy.on_stop(_float(previous))
        if transition.announce is not None:
            announced.append((user_id, conversation_id, transition.announce))
    if announced:
        own_sids = _sids_of_users(ctx, list(dict.fromkeys(user_id for user_id, _, _ in announced)))
        for user_id, conversation_id, typing in announced:
            _announce(ctx, conversation_id, user_id, typing, own_sids.get(user_id, []))
    return len(announced)


def expire(ctx: Context, conversation_id: str, user_id: str,
           now: float | None = None) -> tuple[bool, float | None]:
    """A timer nominated this pair: announce the stop if its deadline really passed.

    Returns (stop announced, current deadline): the deadline is not None when it
    is still typing (a refresh moved it), so the caller can look again then.
    """
    now = ctx.clock() if now is None else now
    member = keys.pair(conversation_id, user_id)
    removed, current = script(ctx.redis, _EXPIRE)(keys=[keys.TYPING_DEADLINES], args=[member, repr(now)])
    # The script applies typing_policy.on_deadline atomically (re-check, then remove).
    transition = typing_policy.on_deadline(_float(current), now) if removed else \
        typing_policy.Transition(_float(current), None)
    if transition.announce is not None:
        _announce(ctx, conversation_id, user_id, transition.announce)
        return True, None
    return False, transition.deadline


def sweep(ctx: Context, now: float | None = None, limit: int = SWEEP_BATCH) -> int:
    """Expire every pair whose deadline passed, whichever node set it (the node may
    be dead). Returns how many stops were announced."""
    now = ctx.clock() if now is None else now
    due = ctx.redis.zrangebyscore(keys.TYPING_DEADLINES, "-inf", now, start=0, num=limit)
    announced = 0
    for member in due:
        conversation_id, user_id = keys.split_pair(member)
        stopped, _ = expire(ctx, conversation_id, user_id, now)
        announced += stopped
    return announced


def is_typing(ctx: Context, conversation_id: str, user_id: str) -> bool:
    return ctx.redis.zscore(keys.TYPING_DEADLINES, keys.pair(conversation_id, user_id)) is not None
