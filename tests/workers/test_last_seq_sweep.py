"""The `last_seq` sweep (realtime.actions.conversations.advance_due_last_seqs, run by
tasks.conversations): sends note conversations as due; a run writes each one's newest
seq hint once, never backwards, and a run killed midway leaves its work to the next."""
import pytest
import redis

from realtime import keys
from realtime.actions import conversations, messages
from realtime.actions.context import Actor, Context
from realtime.models import Conversation
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique


@pytest.fixture
def ctx():
    r = make_redis(support.SETTINGS)
    context = Context(settings=support.SETTINGS, redis=r, source="realtime/test/last-seq",
                      emit=lambda event, data, room, skip_sid=None: None)
    # Hold the sweep lock: the stack's own beat-driven runs stay out meanwhile.
    lock = r.lock(keys.LAST_SEQ_SWEEP_LOCK, timeout=60)
    assert lock.acquire(blocking=True, blocking_timeout=20)
    # Start from nothing due, so each run's count is this test's.
    conversations.advance_due_last_seqs(r)
    yield context
    lock.release()


def stored_last_seq(conv):
    return Conversation.objects.get(id=conv).last_seq or 0


def send_messages(ctx, conv, sender, n):
    for i in range(n):
        messages.send(ctx, Actor(user_id=sender, sid=None), conv, unique("cm"), f"m{i}", None)


def test_sends_are_written_once_per_run_with_the_newest_seq(ctx):
    alice = unique("alice")
    conv = support.make_conversation([alice])
    send_messages(ctx, conv, alice, 3)
    assert stored_last_seq(conv) == 0, "a send writes last_seq itself"
    assert ctx.redis.sismember(keys.LAST_SEQ_DUE, conv)
    assert conversations.advance_due_last_seqs(ctx.redis) == 1
    assert stored_last_seq(conv) == 3
    assert not ctx.redis.exists(keys.LAST_SEQ_DUE, keys.LAST_SEQ_APPLYING)
    assert conversations.advance_due_last_seqs(ctx.redis) == 0


def test_never_moves_last_seq_back(ctx):
    alice = unique("alice")
    conv = support.make_conversation([alice])
    send_messages(ctx, conv, alice, 1)
    # Meanwhile the message service stored and counted more messages itself.
    Conversation.objects(id=conv).update_one(set__last_seq=10)
    conversations.advance_due_last_seqs(ctx.redis)
    assert stored_last_seq(conv) == 10


def test_a_run_killed_midway_leaves_its_conversations_to_the_next(ctx):
    alice = unique("alice")
    taken, later = support.make_conversation([alice]), support.make_conversation([alice])
    send_messages(ctx, taken, alice, 2)
    # A run took the due set, then died before its write.
    ctx.redis.rename(keys.LAST_SEQ_DUE, keys.LAST_SEQ_APPLYING)
    send_messages(ctx, later, alice, 1)
    send_messages(ctx, taken, alice, 1)  # due again, in the new set
    assert conversations.advance_due_last_seqs(ctx.redis) == 1  # the dead run's set first
    assert stored_last_seq(taken) == 3, "the newest hint is written, not the one at the take"
    assert stored_last_seq(later) == 0
    assert conversations.advance_due_last_seqs(ctx.redis) == 2
    assert stored_last_seq(later) == 1


def test_a_conversation_without_a_hint_is_skipped(ctx):
    alice = unique("alice")
    conv, other = support.make_conversation([alice]), support.make_conversation([alice])
    send_messages(ctx, conv, alice, 1)
    send_messages(ctx, other, alice, 2)
    ctx.redis.delete(keys.seq_hint(conv))  # expired
    assert conversations.advance_due_last_seqs(ctx.redis) == 2
    assert stored_last_seq(conv) == 0 and stored_last_seq(other) == 2


def test_a_send_whose_hint_redis_refuses_writes_last_seq_itself(ctx, monkeypatch):
    alice = unique("alice")
    conv = support.make_conversation([alice])

    def refused(*args, **kwargs):
        raise redis.ConnectionError("refused")

    monkeypatch.setattr(conversations, "_end_seq_turn", refused)
    send_messages(ctx, conv, alice, 1)
    # Nothing noted it as due and no hint counts it: last_seq is the only copy.
    assert stored_last_seq(conv) == 1
    assert not ctx.redis.sismember(keys.LAST_SEQ_DUE, conv)
