"""Call state in Redis (the hot path): state JSON, who is in a call, the
conversation's current call, and the deadlines the worker sweep re-checks.

Every transition runs under `transition_lock` (one short lock per conversation, so
an initiate racing another initiate in the same conversation (glare), two answers,
or a timeout racing an answer resolve to exactly one outcome whatever node or
worker they run on). FerretDB has no transactions; Redis is the arbiter and
MongoDB only keeps the record.
"""
from __future__ import annotations

import orjson
import redis

from .. import keys, locks
from ..errors import UNAVAILABLE, ApiError
from .machine import CallState, Party

# A transition is a few Redis calls, one MongoDB write and a few emits; the lock
# outlives that comfortably and frees itself if its holder dies.
LOCK_TTL_S = 5.0
LOCK_WAIT_S = 3.0
# Kept after the end so that late events get `conflict` (ended), not `not_found`.
ENDED_STATE_TTL_S = 3600
# A live call's state outlives any real call; it is refreshed on each transition.
LIVE_STATE_TTL_S = 24 * 3600

# Compare-and-delete: release a key only if it still names this call.
_DELETE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REPLACE_IF_EQUALS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1
end
return 0
"""


def transition_lock(r: redis.Redis, conversation_id: str):
    return locks.waiting(r, keys.call_lock(conversation_id), LOCK_TTL_S, LOCK_WAIT_S,
                         busy=lambda: ApiError(UNAVAILABLE, "call is busy with another change; retry"))


def load(r: redis.Redis, call_id: str) -> CallState | None:
    raw = r.get(keys.call_state(call_id))
    return CallState.from_dict(orjson.loads(raw)) if raw else None


def save(r: redis.Redis, state: CallState) -> None:
    ttl = ENDED_STATE_TTL_S if state.status == "ended" else LIVE_STATE_TTL_S
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.call_state(state.call_id), orjson.dumps(state.to_dict()), ex=ttl)
    if state.status == "ended":
        pipe.eval(_DELETE_IF_EQUALS, 1, keys.call_of_conversation(state.conversation_id), state.call_id)
        pipe.srem(keys.CALLS_LIVE, state.call_id)
    else:
        pipe.set(keys.call_of_conversation(state.conversation_id), state.call_id, ex=LIVE_STATE_TTL_S)
        pipe.sadd(keys.CALLS_LIVE, state.call_id)
    pipe.execute()


def live_call_ids(r: redis.Redis) -> list[str]:
    return [c.decode() if isinstance(c, bytes) else c for c in r.smembers(keys.CALLS_LIVE)]


def forget_live(r: redis.Redis, call_id: str) -> None:
    """Out of the live index: a call whose state expired, or ended by a process that
    died between its two writes."""
    r.srem(keys.CALLS_LIVE, call_id)


def current_call_of_conversation(r: redis.Redis, conversation_id: str) -> str | None:
    return r.get(keys.call_of_conversation(conversation_id))


def call_of_user(r: redis.Redis, user_id: str) -> str | None:
    return r.get(keys.call_of_user(user_id))


def calls_of_users(r: redis.Redis, user_ids: list[str]) -> dict[str, str]:
    """user_id -> call_id of those of these users who are in a call (one round trip)."""
    if not user_ids:
        return {}
    current = r.mget([keys.call_of_user(u) for u in user_ids])
    return {u: call_id for u, call_id in zip(user_ids, current) if call_id}


def is_live(r: redis.Redis, call_id: str) -> bool:
    state = load(r, call_id)
    return state is not None and state.status != "ended"


def busy_users(r: redis.Redis, user_ids: list[str]) -> list[str]:
    """The users who are in a call now."""
    if not user_ids:
        return []
    current = r.mget([keys.call_of_user(u) for u in user_ids])
    # A pointer to an ended or expired call (its holder died before releasing it) is stale.
    return [u for u, call_id in zip(user_ids, current) if call_id and is_live(r, call_id)]


def claim_user(r: redis.Redis, user_id: str, call_id: str) -> bool:
    """Mark the user as in this call; False if they are in another live one."""
    key = keys.call_of_user(user_id)
    if r.set(key, call_id, nx=True, ex=LIVE_STATE_TTL_S):
        return True
    current = r.get(key)
    if current == call_id:
        return True
    if current and not is_live(r, current):
        return bool(r.eval(_REPLACE_IF_EQUALS, 1, key, current, call_id, LIVE_STATE_TTL_S))
    return False


def release_user(r: redis.Redis, user_id: str, call_id: str) -> None:
    r.eval(_DELETE_IF_EQUALS, 1, keys.call_of_user(user_id), call_id)


# --- Deadlines: nominations for the worker sweep ------------------------------------
def deadline_member(kind: str, call_id: str, party: Party | None = None) -> str:
    return "|".join([kind, call_id, party.user_id if party else "", party.device_id if party else ""])


def parse_deadline_member(member: str) -> tuple[str, str, Party | None]:
    kind, call_id, user_id, device_id = member.split("|", 3)
    return kind, call_id, (Party(user_id, device_id) if user_id else None)


def nominate(r: redis.Redis, member: str, at: float) -> None:
    r.zadd(keys.CALL_DEADLINES, {member: at})


def due(r: redis.Redis, now: float, limit: int = 200) -> list[str]:
    return r.zrangebyscore(keys.CALL_DEADLINES, "-inf", now, start=0, num=limit)


def drop_nomination(r: redis.Redis, member: str) -> None:
    r.zrem(keys.CALL_DEADLINES, member)
