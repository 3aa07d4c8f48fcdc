"""Typing policy: pure functions of (state, now, settings) with an injected clock."""
import time

import redis

from realtime import keys, typing_policy
from realtime.actions import typing
from realtime.actions.context import Actor, Context
from realtime.settings import Settings
from tests import support
from tests.support import unique

S = Settings(typing_expiry_s=10.0)


def test_start_from_idle_is_announced_refresh_is_not():
    t = typing_policy.on_start(None, 100.0, S)
    assert t == typing_policy.Transition(110.0, True)
    refresh = typing_policy.on_start(110.0, 105.0, S)
    assert refresh == typing_policy.Transition(115.0, None)


def test_refresh_of_an_expired_but_unannounced_entry_is_no_transition():
    # The stop was never announced, so everyone still sees "typing".
    assert typing_policy.on_start(90.0, 100.0, S).announce is None


def test_stop_announces_only_when_typing():
    assert typing_policy.on_stop(110.0) == typing_policy.Transition(None, False)
    assert typing_policy.on_stop(None) == typing_policy.Transition(None, None)


def test_deadline_is_rechecked_before_acting():
    assert typing_policy.on_deadline(110.0, 109.9) == typing_policy.Transition(110.0, None)
    assert typing_policy.on_deadline(110.0, 110.0) == typing_policy.Transition(None, False)
    assert typing_policy.on_deadline(None, 200.0) == typing_policy.Transition(None, None)
    assert not typing_policy.is_expired(None, 1e12)


class FakeClock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_actions_with_an_injected_clock_announce_each_transition_once():
    """The Redis side: refreshes announce nothing, a timer nominated early does
    nothing, the sweep announces the expiry once."""
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    conv, user = unique("conv"), unique("u")
    events = []
    # Far in the future, so the stack's own sweep (real clock) leaves it alone.
    clock = FakeClock(time.time() + 100_000)

    def emit(event, data, room, skip_sid=None):
        # typing.sweep with that clock also expires every real entry in the shared
        # deadline set (other tests', the stack's): keep only this test's pair's events.
        if data.get("conversation_id") == conv and data.get("user_id") == user:
            events.append((event, data, room))

    ctx = Context(settings=Settings(typing_expiry_s=2.0), redis=r, clock=clock, source="realtime/test/typing",
                  emit=emit)
    actor = Actor(user_id=user)
    assert typing.start(ctx, actor, conv)[0] is True
    clock.now += 1.5
    assert typing.start(ctx, actor, conv)[0] is False          # refresh: deadline now + 2
    clock.now += 1.0                                           # past the first deadline only
    assert typing.expire(ctx, conv, user) == (False, clock.now + 1.0)
    typing.sweep(ctx)
    assert [e[1]["typing"] for e in events] == [True]
    clock.now += 1.1
    assert typing.sweep(ctx) >= 1
    assert typing.expire(ctx, conv, user) == (False, None)      # already announced
    assert typing.stop(ctx, user, conv) is False
    assert [e[1]["typing"] for e in events] == [True, False]
    assert all(e[2] == keys.conversation_room(conv) for e in events)
    assert r.zscore(keys.TYPING_DEADLINES, keys.pair(conv, user)) is None


def test_pair_keys_roundtrip_whatever_the_ids_contain():
    for conv, user in [("a", "b"), ("a:b", "c:d"), ("12:x", ""), ("ü:1", "::")]:
        assert keys.split_pair(keys.pair(conv, user)) == (conv, user)
