"""Where every authenticated socket is: the cross-node registry in Redis.

Other features ask it who is connected (presence, notifications, calls). One
edge node owns each socket and is the only writer of its entry, so entries are
written whole (no read-modify-write). Keys:

  rt:conns:<user_id>      hash sid -> JSON {sid, user_id, device_id, node_id,
                          connected_at, conversations}
  rt:node:<node_id>:sids  hash sid -> user_id (what a dead node leaves behind)
  rt:nodes:heartbeat      zset node_id -> last heartbeat (epoch seconds)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import redis

from . import keys
from .redis_client import script


def user_key(user_id: str) -> str:
    return f"rt:conns:{user_id}"


def node_key(node_id: str) -> str:
    return f"rt:node:{node_id}:sids"


@dataclass
class Connection:
    sid: str
    user_id: str
    device_id: str
    node_id: str
    connected_at: float
    conversations: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return orjson.dumps(self)   # orjson serializes dataclasses as dataclasses.asdict does, ~10x faster

    @classmethod
    def decode(cls, raw: bytes | str) -> "Connection":
        data = orjson.loads(raw)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _pipeline(r: redis.Redis | redis.client.Pipeline) -> redis.client.Pipeline:
    # A Pipeline is a Redis subclass: test for the pipeline, or every write given
    # one would run as a round trip of its own (edge.registry's batches did).
    return r if isinstance(r, redis.client.Pipeline) else r.pipeline(transaction=False)


def save(r: redis.Redis | redis.client.Pipeline, conn: Connection) -> None:
    """Register or update a socket (on authentication and on join/leave); given a
    pipeline, only queues the writes."""
    pipe = _pipeline(r)
    pipe.hset(user_key(conn.user_id), conn.sid, conn.encode())
    pipe.hset(node_key(conn.node_id), conn.sid, conn.user_id)
    if pipe is not r:
        pipe.execute()


def remove(r: redis.Redis | redis.client.Pipeline, sid: str, user_id: str, node_id: str) -> None:
    pipe = _pipeline(r)
    pipe.hdel(user_key(user_id), sid)
    pipe.hdel(node_key(node_id), sid)
    if pipe is not r:
        pipe.execute()


# KEYS: a (user hash, node hash) pair per write; ARGV: a (sid, entry, user_id) triple per
# write, entry '' for a removal. The writes apply in order, all at once.
_APPLY = """
for i = 1, #KEYS / 2 do
  local a = 3 * i - 2
  if ARGV[a + 1] == '' then
    redis.call('HDEL', KEYS[2 * i - 1], ARGV[a])
    redis.call('HDEL', KEYS[2 * i], ARGV[a])
  else
    redis.call('HSET', KEYS[2 * i - 1], ARGV[a], ARGV[a + 1])
    redis.call('HSET', KEYS[2 * i], ARGV[a], ARGV[a + 2])
  end
end
return #KEYS / 2
"""

# One write of a batch: a Connection to save, or (sid, user_id, node_id) to remove.
Write = Connection | tuple[str, str, str]


def apply(r: redis.Redis, writes: list[Write]) -> None:
    """Many saves and removals in one command (a connect or disconnect storm). In a
    pipeline each write costs redis-py's per-command work twice over (~7 us of client
    CPU per command); here it is a few list items."""
    if not writes:
        return
    keys_, args = [], []
    for w in writes:
        if isinstance(w, Connection):
            keys_ += (user_key(w.user_id), node_key(w.node_id))
            args += (w.sid, w.encode(), w.user_id)
        else:
            sid, user_id, node_id = w
            keys_ += (user_key(user_id), node_key(node_id))
            args += (sid, "", "")
    script(r, _APPLY)(keys=keys_, args=args)


def of_user(r: redis.Redis, user_id: str) -> list[Connection]:
    return [Connection.decode(raw) for raw in r.hvals(user_key(user_id))]


def of_users(r: redis.Redis, user_ids: list[str]) -> dict[str, list[Connection]]:
    pipe = r.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hvals(user_key(user_id))
    return {user_id: [Connection.decode(raw) for raw in raws]
            for user_id, raws in zip(user_ids, pipe.execute())}


def is_connected(r: redis.Redis, user_id: str) -> bool:
    return r.hlen(user_key(user_id)) > 0


def in_conversation(conns: list[Connection], conversation_id: str) -> bool:
    """Whether any of these sockets has joined the conversation's room."""
    return any(conversation_id in c.conversations for c in conns)


def of_node(r: redis.Redis, node_id: str) -> dict[str, str]:
    """sid -> user_id of every socket a node registered."""
    return {k if isinstance(k, str) else k.decode(): v if isinstance(v, str) else v.decode()
            for k, v in r.hgetall(node_key(node_id)).items()}


def heartbeat(r: redis.Redis, node_id: str, now: float) -> None:
    r.zadd(keys.NODES_HEARTBEAT, {node_id: now})


def silent_nodes(r: redis.Redis, now: float, timeout_s: float) -> list[str]:
    """Nodes whose last heartbeat is older than timeout_s."""
    return [n if isinstance(n, str) else n.decode()
            for n in r.zrangebyscore(keys.NODES_HEARTBEAT, "-inf", now - timeout_s)]
