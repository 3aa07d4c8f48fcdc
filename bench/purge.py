"""Removes what benchmark runs leave in the stack's stores; bench/run.py calls it before a
run (for runs that were killed) and after it.

Every id a run makes is a bench id: users and conversations `bench-<run>-u<i>` and
`bench-<run>-c<hex>` (bench.run.Users), server nodes `bench-<kind><i>`; the Node.js
reference keeps its keys under `bench-node:` and its messages in `bench-node_messages`.
Without this the dev stack filled up run after run: after a few dozen, Redis held 735,000
presence hashes of bench users and FerretDB 16,000 conversations of up to 5,000 members,
whose `_id $in` reads (receipt aggregation) then took over a second, enough to fail the
receipt tests.
"""
from __future__ import annotations

import re

import redis

from realtime import keys

# A bench id, at the start of a key, member or field or after a separator (a pair's `:`,
# a routed channel's `#`): a real user whose id merely contains "bench-" is not one.
BENCH_ID = re.compile(r"""
    (?:^|[:#]) bench-
    (?: [0-9a-f]{6}-[uc][0-9a-f]+             # a run's user or conversation
      | (?:edge|edge-stock|edge-gevent|node)\d+  # a server process
    )
    (?:$|[:#])""", re.VERBOSE)
NODE_REFERENCE_PREFIX = "bench-node:"
NODE_REFERENCE_MESSAGES = "bench-node_messages"
# Shared structures whose members or fields name users, conversations or nodes.
SHARED_KEYS = (keys.PRESENCE_DUE, keys.PRESENCE_LEASES, keys.NODES_HEARTBEAT, keys.LAST_SEQ_DUE,
               keys.TYPING_DEADLINES, keys.READS_PENDING, keys.READS_FLUSHING)
# Keys and members removed per command.
BATCH = 2000


def is_bench_name(name: str) -> bool:
    return name.startswith(NODE_REFERENCE_PREFIX) or BENCH_ID.search(name) is not None


def purge_redis(r: redis.Redis) -> dict[str, int]:
    """`r`: a client that decodes responses (realtime.redis_client.make_redis)."""
    removed_keys = removed_members = 0
    batch: list[str] = []
    for key in r.scan_iter(match="*bench-*", count=BATCH):
        if is_bench_name(key):
            batch.append(key)
            if len(batch) >= BATCH:
                removed_keys += r.unlink(*batch)
                batch = []
    if batch:
        removed_keys += r.unlink(*batch)
    for key in SHARED_KEYS:
        removed_members += purge_members(r, key)
    return {"redis_keys": removed_keys, "redis_members": removed_members}


def purge_members(r: redis.Redis, key: str) -> int:
    """The bench names among the members of a sorted set or set, or the fields of a hash."""
    kind = r.type(key)
    if kind == "zset":
        found = [m for m, _ in r.zscan_iter(key, match="*bench-*", count=BATCH)]
        remove = r.zrem
    elif kind == "set":
        found = list(r.sscan_iter(key, match="*bench-*", count=BATCH))
        remove = r.srem
    elif kind == "hash":
        found = [f for f, _ in r.hscan_iter(key, match="*bench-*", count=BATCH)]
        remove = r.hdel
    else:
        return 0
    found = [name for name in found if is_bench_name(name)]
    return sum(remove(key, *found[i:i + BATCH]) for i in range(0, len(found), BATCH))


def purge_database(db) -> dict[str, int]:
    """`db`: the pymongo database. A regex is a scan on FerretDB; this runs once per run,
    outside every measured phase."""
    conversation = {"$regex": r"^bench-[0-9a-f]{6}-c"}
    removed = {name: db[name].delete_many({"conversation_id": conversation}).deleted_count
               for name in ("messages", "read_states", "notifications")}
    removed["conversations"] = db.conversations.delete_many({"_id": conversation}).deleted_count
    # The Node.js reference's own messages (bench/node/server.js).
    db.drop_collection(NODE_REFERENCE_MESSAGES)
    return removed


def purge(r: redis.Redis, db) -> dict[str, int]:
    return {**purge_redis(r), **purge_database(db)}
