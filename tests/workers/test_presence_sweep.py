"""The beat's presence sweep (workers.presence_sweep): silent nodes, the lock, Kafka."""
import time

import orjson
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from realtime import connections, envelope, keys, locks, timeutil
from realtime.actions import presence
from realtime.actions.context import Context
from tests import support
from tests.support import unique
from workers import presence_sweep


def make_ctx() -> Context:
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    return Context(settings=support.SETTINGS, redis=r, emit=lambda *a, **k: None,
                   source=envelope.source_id("worker", "test-presence-sweep"))


def presence_events(user_id: str, want: int, timeout: float) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=support.SETTINGS.kafka_bootstrap, enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=1000, request_timeout_ms=30000)
    topic = support.SETTINGS.topic("presence")
    found: list[dict] = []
    seen_ids: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        parts = []
        while not parts and time.monotonic() < deadline:
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            if not parts:
                time.sleep(0.5)
        consumer.assign(parts)
        support.seek_to_test_start(consumer, parts)
        while time.monotonic() < deadline and len(found) < want:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    event = orjson.loads(record.value)
                    # The outbox relay is at least once: a redelivered event repeats
                    # its event_id. Keep the first copy.
                    if event.get("user_id") == user_id and event.get("event_id") not in seen_ids:
                        seen_ids.add(event.get("event_id"))
                        found.append(dict(event, _key=record.key))
    finally:
        consumer.close()
    return found


def test_a_silent_node_is_settled_in_one_pass_and_its_users_announced_offline(clients):
    ctx = make_ctx()
    dead = unique("deadnode")
    alice, carol, bob = unique("alice"), unique("carol"), unique("bob")
    support.make_conversation([alice, carol, bob])
    b = clients(support.EDGE1, user=bob)
    b.call("presence_subscribe", {"user_ids": [alice, carol]})
    now = time.time()
    for user, device in ((alice, "phone"), (alice, "laptop"), (carol, "phone")):
        connections.save(ctx.redis, connections.Connection(
            sid=unique("sid"), user_id=user, device_id=device, node_id=dead, connected_at=now))
        presence.connected(ctx, user)
    # carol also has a socket on a live node: she stays online.
    c = clients(support.EDGE2, user=carol)
    support.eventually(lambda: {e["user_id"] for e in b.received("user_presence")} == {alice, carol})
    last_alive = now - support.SETTINGS.presence_node_timeout_s - 1
    ctx.redis.zadd(keys.NODES_HEARTBEAT, {dead: last_alive})

    # The stack's beat sweeps too: its run may hold the lock (ours returns None) and
    # may have started before the node looked dead. So sweep until the node is
    # settled, by us or by the stack.
    ours = []

    def settled():
        result = presence_sweep.sweep(ctx, lock_ttl_s=30)
        if result is not None:
            ours.append(result)
        return connections.of_node(ctx.redis, dead) == {} and ctx.redis.zscore(keys.NODES_HEARTBEAT, dead) is None

    support.eventually(settled, timeout=15, interval=0.2, message=f"{dead} settled")
    # Settled once, whoever did it: when one of our passes did, with all 3 sockets
    # in that one pass; and a further pass does not settle it again.
    counts = [result["nodes"][dead] for result in ours if dead in result["nodes"]]
    assert counts in ([], [3]), ours
    again = presence_sweep.sweep(ctx, lock_ttl_s=30)
    assert again is None or dead not in again["nodes"], again
    offline = b.wait_for("user_presence", lambda e: e["user_id"] == alice and e["status"] == "offline")
    assert offline["last_seen"] == timeutil.iso(last_alive)
    time.sleep(1.2)
    assert [e["status"] for e in b.received("user_presence") if e["user_id"] == carol] == ["online"]
    assert c.call("presence_update", {"status": "busy"})["ok"]

    # Every announced change went to Kafka chat.presence, keyed by the user.
    events = presence_events(alice, want=2, timeout=15)
    assert [e["data"]["status"] for e in events] == ["online", "offline"]
    assert all(e["type"] == "presence.changed" and e["_key"] == alice.encode() for e in events)
    assert events[1]["data"]["last_seen"] == timeutil.iso(last_alive)


def test_the_sweep_does_not_run_twice_at_once():
    ctx = make_ctx()
    with locks.held(ctx.redis, keys.sweep_lock(presence_sweep.LOCK_NAME), 5) as mine:
        if mine:
            assert presence_sweep.sweep(ctx, lock_ttl_s=5) is None


def test_a_live_node_is_never_settled():
    ctx = make_ctx()
    live = unique("livenode")
    ctx.redis.zadd(keys.NODES_HEARTBEAT, {live: time.time()})
    connections.save(ctx.redis, connections.Connection(
        sid=unique("sid"), user_id=unique("u"), device_id="d", node_id=live, connected_at=time.time()))
    assert live not in presence.sweep_silent_nodes(ctx)
    assert len(connections.of_node(ctx.redis, live)) == 1
    ctx.redis.zrem(keys.NODES_HEARTBEAT, live)
    ctx.redis.delete(connections.node_key(live))


def test_a_user_being_settled_is_not_claimed_by_a_second_settler():
    """A nomination while one settler holds a user must wait for its release: two
    settlers reading the same announced state would announce the change twice."""
    from realtime.presence import store
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    user = unique("leased")
    # Keys of this test's own: the stack's settlers claim whatever is due in the
    # real due set, and could take the user between the nomination and the claim.
    due, leases = unique("test:presence:due"), unique("test:presence:leases")
    now = time.time()
    scripts = store.scripts(r)
    r.zadd(due, {user: now - 1}, lt=True)
    lease = repr(now + store.CLAIM_LEASE_S)
    claim = dict(keys=[due, leases], args=[repr(now), lease, 100000])
    try:
        assert scripts.claim(**claim) == [user]
        r.zadd(due, {user: now}, lt=True)      # a socket event on another node meanwhile
        assert scripts.claim(**claim) == []
        store.write_settled(r, lease, [(user, None, None)], due=due, leases=leases)
        assert scripts.claim(**dict(claim, args=[repr(now), repr(now + 20), 100000])) == [user]
    finally:
        r.delete(due, leases)


def test_a_settled_batch_is_released_in_one_call():
    """Each user of the batch: the lease ends; with no newer nomination its due entry is
    dropped or moved to its recheck; a newer nomination stays, moved earlier only."""
    from realtime.presence import store
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    done, later, renominated, soon = (unique(n) for n in ("done", "later", "renominated", "soon"))
    due, leases = unique("test:presence:due"), unique("test:presence:leases")
    now = time.time()
    scripts = store.scripts(r)
    lease = repr(now + store.CLAIM_LEASE_S)
    try:
        r.zadd(due, {u: now - 1 for u in (done, later, renominated, soon)})
        assert sorted(scripts.claim(keys=[due, leases], args=[repr(now), lease, 100])) == sorted(
            [done, later, renominated, soon])
        r.zadd(due, {renominated: now + 30, soon: now + 1}, lt=True)   # nominated while settled
        store.write_settled(r, lease, [(done, None, None), (later, now + 60, None),
                                       (renominated, now + 5, None), (soon, now + 5, None)],
                            due=due, leases=leases)
        assert r.hgetall(leases) == {}
        assert r.zscore(due, done) is None
        assert r.zscore(due, later) == pytest.approx(now + 60)
        assert r.zscore(due, renominated) == pytest.approx(now + 5)   # the recheck is sooner
        assert r.zscore(due, soon) == pytest.approx(now + 1)          # the nomination is sooner
    finally:
        r.delete(due, leases)


def test_a_settled_batch_writes_what_was_announced_before_releasing():
    from realtime.presence import policy, store
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    seen, quiet = unique("seen"), unique("quiet")
    due, leases = unique("test:presence:due"), unique("test:presence:leases")
    now = time.time()
    lease = repr(now + store.CLAIM_LEASE_S)
    shown = policy.Shown("offline", None, now - 3)
    state = policy.PresenceState(announced=shown, announced_at=now, last_seen=now - 3)
    try:
        r.zadd(due, {seen: now - 1, quiet: now - 1})
        store.scripts(r).claim(keys=[due, leases], args=[repr(now), lease, 100])
        store.write_settled(r, lease, [(seen, None, state), (quiet, None, None)], due=due, leases=leases)
        assert store.load_announced(r, [seen, quiet]) == {seen: shown, quiet: policy.Shown()}
        loaded = store.load_states(r, [seen, quiet])
        assert loaded[seen].announced_at == pytest.approx(now) and loaded[seen].last_seen == pytest.approx(now - 3)
        assert loaded[quiet] == store.decode_state([], 0)
        assert r.zcard(due) == 0 and r.hgetall(leases) == {}
    finally:
        r.delete(due, leases, keys.presence(seen), keys.presence(quiet))
