"""bench.purge: what bench runs leave in Redis and MongoDB goes, and nothing else."""
import datetime
import uuid

import pymongo
import pytest

from bench import purge
from realtime import keys
from realtime.redis_client import make_redis
from tests import support


@pytest.mark.parametrize("name, is_bench", [
    ("bench-0a1b2c-u17", True),
    ("bench-0a1b2c-c9f8e7d6", True),
    ("rt:presence:bench-0a1b2c-u17", True),
    ("rt:presence:settled:bench-edge2", True),
    ("rt:presence:settled:bench-edge-stock3", True),
    ("bench-node1", True),
    ("22:bench-0a1b2c-c9f8e7d6:bench-0a1b2c-u3", True),
    ("bench-node:seq:bench-0a1b2c-c9f8e7d6", True),
    ("bench-node:outbox", True),
    # not the bench's: ids that only look alike
    ("rt:presence:workbench-0a1b2c-u17", False),
    ("rt:presence:bench-joe", False),
    ("rt:presence:bench-0a1b2c-u17x", False),
    ("bench-edge", False),
    ("alice", False),
    ("5:alice:bench", False),
])
def test_bench_names(name, is_bench):
    assert purge.is_bench_name(name) is is_bench


@pytest.fixture
def stores():
    r = make_redis(support.SETTINGS)
    db = pymongo.MongoClient(support.SETTINGS.mongo_url).get_default_database()
    return r, db


def test_purge_removes_the_runs_data_and_keeps_the_rest(stores):
    r, db = stores
    run = uuid.uuid4().hex[:6]
    user, conv = f"bench-{run}-u1", f"bench-{run}-c{uuid.uuid4().hex[:8]}"
    other_user, other_conv = support.unique("benchmarker"), support.unique("conv")
    now = datetime.datetime.now(datetime.timezone.utc)
    # Not due for an hour: the stack's settle loops leave them where they are meanwhile.
    later = now.timestamp() + 3600

    bench_keys = [keys.presence(user), keys.seq_hint(conv), f"bench-node:seq:{conv}"]
    other_keys = [keys.presence(other_user), keys.seq_hint(other_conv)]
    for key in bench_keys + other_keys:
        r.set(key, 1, ex=600)
    r.zadd(keys.PRESENCE_DUE, {user: later, other_user: later})
    db.conversations.insert_many([{"_id": conv, "kind": "group", "members": [user], "created_at": now},
                                  {"_id": other_conv, "kind": "group", "members": [other_user], "created_at": now}])
    db.messages.insert_many([{"_id": uuid.uuid4().hex, "conversation_id": c, "seq": 1} for c in (conv, other_conv)])
    db[purge.NODE_REFERENCE_MESSAGES].insert_one({"_id": uuid.uuid4().hex, "conversation_id": conv})
    try:
        removed = purge.purge(r, db)

        assert removed["conversations"] >= 1 and removed["messages"] >= 1
        assert [r.exists(k) for k in bench_keys] == [0, 0, 0]
        assert [r.exists(k) for k in other_keys] == [1, 1]
        assert r.zscore(keys.PRESENCE_DUE, user) is None
        assert r.zscore(keys.PRESENCE_DUE, other_user) == later
        assert db.conversations.find_one({"_id": conv}) is None
        assert db.conversations.find_one({"_id": other_conv}) is not None
        assert db.messages.count_documents({"conversation_id": conv}) == 0
        assert db.messages.count_documents({"conversation_id": other_conv}) == 1
        assert purge.NODE_REFERENCE_MESSAGES not in db.list_collection_names()
    finally:
        r.delete(*other_keys)
        r.zrem(keys.PRESENCE_DUE, other_user)
        db.conversations.delete_one({"_id": other_conv})
        db.messages.delete_many({"conversation_id": other_conv})


def test_members_of_every_kind_of_shared_structure(stores):
    """Sorted sets, sets and hashes (the shared keys of bench.purge.SHARED_KEYS are one of
    these), on keys of the test's own that no stack process consumes."""
    r, _ = stores
    run = uuid.uuid4().hex[:6]
    bench = [f"bench-{run}-u1", keys.pair(f"bench-{run}-c1", f"bench-{run}-u1"), "bench-edge1"]
    other = [support.unique("alice"), keys.pair(support.unique("conv"), "bench"), "workbench-0a1b2c-u1"]
    zset, plain_set, hash_ = (support.unique(f"test:purge:{kind}") for kind in ("zset", "set", "hash"))
    r.zadd(zset, {m: 1 for m in bench + other})
    r.sadd(plain_set, *bench, *other)
    r.hset(hash_, mapping={m: 1 for m in bench + other})
    try:
        assert [purge.purge_members(r, k) for k in (zset, plain_set, hash_)] == [3, 3, 3]
        assert sorted(r.zrange(zset, 0, -1)) == sorted(other)
        assert sorted(r.smembers(plain_set)) == sorted(other)
        assert sorted(r.hkeys(hash_)) == sorted(other)
        assert purge.purge_members(r, support.unique("test:purge:missing")) == 0
    finally:
        r.delete(zset, plain_set, hash_)
