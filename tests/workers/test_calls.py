"""workers.calls: the call sweeps, against the stack's Redis and database.

`make test` runs the stack with CALL_RECONNECT_GRACE_S=2 and the beat's call sweeps.
"""
import time

import redis

from realtime import connections, envelope, keys
from realtime.actions import calls
from realtime.actions.context import Actor, Context
from realtime.calls import machine, store
from tests import support
from tests.support import unique
from workers import calls as call_workers

GRACE_S = support.SETTINGS.call_reconnect_grace_s


def make_ctx() -> Context:
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    return Context(settings=support.SETTINGS, redis=r, emit=lambda *a, **k: None,
                   source=envelope.source_id("worker", "test-calls"))


def _register(ctx: Context, node_id: str, user_id: str, device_id: str) -> str:
    sid = unique("sid")
    connections.save(ctx.redis, connections.Connection(sid=sid, user_id=user_id, device_id=device_id,
                                                       node_id=node_id, connected_at=time.time()))
    return sid


def test_a_participant_left_without_socket_or_grace_gets_its_grace_and_the_call_ends():
    """What a disconnect batch given up during a Redis outage leaves behind: the device's
    registry entry is gone (removed at the close) and no grace was started. The reconcile
    starts it; the grace then ends the call as for any device lost."""
    ctx = make_ctx()
    node = unique("calls-node")
    ctx.redis.zadd(keys.NODES_HEARTBEAT, {node: time.time()})
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    a_sid, b_sid = _register(ctx, node, alice, "a1"), _register(ctx, node, bob, "b1")
    try:
        call_id = calls.initiate(ctx, Actor(alice, a_sid, "a1"), conv, "audio", None, None)["call_id"]
        calls.answer(ctx, Actor(bob, b_sid, "b1"), call_id, None)
        assert call_id in store.live_call_ids(ctx.redis)

        connections.remove(ctx.redis, b_sid, bob, node)      # bob's socket closed; no hook ran
        assert calls.devices_without_socket(ctx) <= 1         # 0 if the beat's reconcile was first
        state = store.load(ctx.redis, call_id)
        assert set(state.gone_since) == {machine.Party(bob, "b1").key}   # alice is connected: untouched
        assert calls.devices_without_socket(ctx) == 0         # a grace running is not restarted

        ended = support.eventually(
            lambda: (s := store.load(ctx.redis, call_id)) is not None and s.status == machine.ENDED and s,
            timeout=GRACE_S + 6, message="call ended after the grace")
        assert ended.end_reason == "connection_lost"
        assert call_id not in store.live_call_ids(ctx.redis)
    finally:
        connections.remove(ctx.redis, a_sid, alice, node)
        ctx.redis.zrem(keys.NODES_HEARTBEAT, node)


def test_the_live_index_forgets_calls_whose_state_is_gone():
    ctx = make_ctx()
    ghost = unique("call-expired")
    ctx.redis.sadd(keys.CALLS_LIVE, ghost)
    call_workers.reconcile_devices()
    assert ghost not in store.live_call_ids(ctx.redis)
