"""Presence in Redis, shared by every edge node and worker.

  rt:presence:<user_id>  hash: chosen, message, offline_since, last_seen,
                         announced (JSON of policy.Shown), announced_at
  rt:conns:<user_id>     the live sockets (realtime.connections, written by the edge)
  rt:presence:due        zset user_id -> when to decide about the user again

Writers only record facts and nominate the user in `due` (one ZADD, earliest
time wins); whoever settles due users (each edge node's loop, the beat sweep)
claims a batch atomically with a lease, so two settlers never work on one user
at once, and a settler that dies mid-batch leaves its users to be claimed again
once the lease runs out.
"""
from __future__ import annotations

import orjson
import redis

from .. import connections, keys
from .policy import ONLINE, PresenceState, Shown

# A claimed user's due score is moved this far ahead while it is being settled.
CLAIM_LEASE_S = 10.0

# KEYS[1] due zset, KEYS[2] leases hash; ARGV: now, lease_until, limit.
# Returns the claimed user ids. A user whose lease is still running is skipped
# even when a newer nomination made it due again: its settler is not done, and
# a second settler reading the same announced state would announce twice.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(ids) do
  local lease = redis.call('HGET', KEYS[2], id)
  if not lease or tonumber(lease) <= tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', KEYS[2], id, ARGV[2])
    claimed[#claimed + 1] = id
  end
end
return claimed
"""

# KEYS[1] due zset, KEYS[2] leases hash, then the presence hash of each user settled;
# ARGV[1] lease_until, then per user: user_id, recheck_at ('' for none), and what was
# announced ('' if nothing): the Shown JSON, announced_at, last_seen ('' for none).
# Writes what was announced, then ends the leases; one call per settled batch (a
# connect storm settles a thousand users at a time), so a user is claimable again
# only once what was announced about it is written.
# The lease of each user: if nobody nominated the user while it was settled (score
# still the lease), replace the lease by the recheck time (or drop it); otherwise a
# newer nomination is there and stays, moved earlier to the recheck if that is sooner.
_SETTLED = """
local lease = ARGV[1]
for i = 3, #KEYS do
  local a = 5 * (i - 3) + 2
  local id, recheck, shown = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if shown ~= '' then
    redis.call('HSET', KEYS[i], 'announced', shown, 'announced_at', ARGV[a + 3])
    if ARGV[a + 4] ~= '' then redis.call('HSET', KEYS[i], 'last_seen', ARGV[a + 4]) end
  end
  if redis.call('HGET', KEYS[2], id) == lease then redis.call('HDEL', KEYS[2], id) end
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) == tonumber(lease) then
    if recheck == '' then redis.call('ZREM', KEYS[1], id)
    else redis.call('ZADD', KEYS[1], recheck, id) end
  elseif recheck ~= '' then
    redis.call('ZADD', KEYS[1], 'LT', recheck, id)
  end
end
return 1
"""

# KEYS: per user, its presence hash then its connections hash (realtime.connections).
# Returns per user its presence fields (flat) and its number of sockets.
_LOAD = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = redis.call('HLEN', KEYS[i + 1])
end
return out
"""

# KEYS[1] heartbeat zset; ARGV: node_id, cutoff. Removes the node's heartbeat
# only if it is still older than the cutoff (the node did not come back), which
# makes the caller the one sweeper of that node. Returns the old score or false.
_CLAIM_SILENT_NODE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return score
end
return false
"""


class Scripts:
    def __init__(self, r: redis.Redis):
        self.claim = r.register_script(_CLAIM)
        self.settled = r.register_script(_SETTLED)
        self.load = r.register_script(_LOAD)
        self.claim_silent_node = r.register_script(_CLAIM_SILENT_NODE)


_scripts: dict[int, Scripts] = {}


def scripts(r: redis.Redis) -> Scripts:
    s = _scripts.get(id(r))
    if s is None:
        s = _scripts[id(r)] = Scripts(r)
    return s


def _str(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _float(value) -> float | None:
    value = _str(value)
    return float(value) if value not in (None, "") else None


def decode_shown(raw) -> Shown:
    raw = _str(raw)
    if not raw:
        return Shown()
    data = orjson.loads(raw)
    return Shown(data.get("status") or "offline", data.get("message"), data.get("last_seen"))


def encode_shown(shown: Shown) -> str:
    return orjson.dumps({"status": shown.status, "message": shown.message,
                         "last_seen": shown.last_seen}).decode()


def decode_state(flat_fields: list, connection_count: int) -> PresenceState:
    """From the presence hash as a script returns HGETALL: field, value, field, value..."""
    pairs = iter(flat_fields or ())
    fields = {_str(k): v for k, v in zip(pairs, pairs)}
    return PresenceState(
        chosen=_str(fields.get("chosen")) or ONLINE,
        message=_str(fields.get("message")) or None,
        connections=int(connection_count or 0),
        offline_since=_float(fields.get("offline_since")),
        last_seen=_float(fields.get("last_seen")),
        announced=decode_shown(fields.get("announced")),
        announced_at=_float(fields.get("announced_at")),
    )


def nominate(pipe, user_id: str, at: float) -> None:
    """Ask for a decision about the user at `at` (an earlier nomination wins)."""
    nominate_many(pipe, (user_id,), at)


def nominate_many(pipe, user_ids, at: float) -> None:
    """nominate() for many users, in one command."""
    if user_ids:
        pipe.zadd(keys.PRESENCE_DUE, dict.fromkeys(user_ids, at), lt=True)


def load_states(r: redis.Redis, user_ids: list[str]) -> dict[str, PresenceState]:
    """Each user's facts and live socket count, in one command."""
    keys_ = []
    for user_id in user_ids:
        keys_ += (keys.presence(user_id), connections.user_key(user_id))
    replies = scripts(r).load(keys=keys_) if keys_ else []
    return {user_id: decode_state(replies[2 * i], replies[2 * i + 1]) for i, user_id in enumerate(user_ids)}


def load_announced(r: redis.Redis, user_ids: list[str]) -> dict[str, Shown]:
    """What subscribers were last told about each user (the subscribe snapshot)."""
    pipe = r.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hget(keys.presence(user_id), "announced")
    return {user_id: decode_shown(raw) for user_id, raw in zip(user_ids, pipe.execute())}


def write_settled(r: redis.Redis, lease_until: str, settled: list[tuple[str, float | None, PresenceState | None]],
                  *, due: str = keys.PRESENCE_DUE, leases: str = keys.PRESENCE_LEASES) -> None:
    """The outcome of a claimed batch, in one command: per (user_id, recheck_at, state
    announced or None), what was announced, then the end of the user's lease."""
    keys_, args = [due, leases], [lease_until]
    for user_id, recheck_at, announced in settled:
        keys_.append(keys.presence(user_id))
        args += (user_id, "" if recheck_at is None else repr(recheck_at))
        if announced is None:
            args += ("", "", "")
        else:
            args += (encode_shown(announced.announced), repr(announced.announced_at),
                     "" if announced.last_seen is None else repr(announced.last_seen))
    scripts(r).settled(keys=keys_, args=args)
