"""The aggregation of reads (workers/receipts.py) loses no read when the worker is
killed at any stage, and a redone run changes nothing twice."""
import time

import pytest

from realtime import envelope, keys
from realtime.actions import receipts
from realtime.actions.context import Actor, Context
from realtime.models import Conversation, ReadState
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique
from tests.workers.test_kafka_relay import consume_event_ids
from workers import receipts as aggregation


class Killed(Exception):
    pass


def die_at(stage):
    def hook(current):
        if current == stage:
            raise Killed(stage)
    return hook


@pytest.fixture
def ctx():
    r = make_redis(support.SETTINGS)
    events = []
    context = Context(settings=support.SETTINGS, redis=r, source="realtime/test/receipts",
                      emit=lambda event, data, room, skip_sid=None: events.append((event, data, room)))
    context.events = events
    # Hold the aggregation lock: the stack's own beat-driven runs stay out meanwhile.
    lock = r.lock(keys.READS_FLUSH_LOCK, timeout=60)
    assert lock.acquire(blocking=True, blocking_timeout=20)
    yield context
    lock.release()


def setup_reads(ctx, n_users=5, last_seq=50):
    users = [unique("u") for _ in range(n_users)]
    conv = support.make_conversation(users)
    Conversation.objects(id=conv).update_one(set__last_seq=last_seq)
    for i, user in enumerate(users):
        receipts.record_read(ctx, Actor(user_id=user), conv, 10 + i, private=False)
        receipts.record_read(ctx, Actor(user_id=user), conv, 5, private=False)  # backwards: no effect
    return conv, users


def mine(ctx, conv):
    return [e for e in ctx.events if e[1]["conversation_id"] == conv]


@pytest.mark.parametrize("stage", ["after_read", "after_stage", "after_write"])
def test_worker_killed_during_aggregation_loses_no_read(ctx, stage):
    conv, users = setup_reads(ctx)
    with pytest.raises(Killed):
        aggregation.flush(ctx, fail_at=die_at(stage))
    written = {d.user_id: d.seq for d in ReadState.objects(conversation_id=conv)}
    assert written == ({u: 10 + i for i, u in enumerate(users)} if stage == "after_write" else {})
    assert mine(ctx, conv) == []  # killed before announcing
    # The next run finishes the job.
    time.sleep(0.01)
    aggregation.flush(ctx)
    assert {d.user_id: d.seq for d in ReadState.objects(conversation_id=conv)} == {
        u: 10 + i for i, u in enumerate(users)}
    receipts_sent = [e for e in mine(ctx, conv) if e[0] == "read_receipt"]
    assert sorted((e[1]["user_id"], e[1]["seq"]) for e in receipts_sent) == sorted(
        (u, 10 + i) for i, u in enumerate(users))
    assert all(e[2] == keys.conversation_room(conv) for e in receipts_sent)
    updates = [e for e in mine(ctx, conv) if e[0] == "unread_update"]
    assert sorted(e[1]["unread"] for e in updates) == sorted(50 - 10 - i for i in range(len(users)))
    # Nothing is left behind, and a further run (a redelivered task) changes nothing.
    members = [keys.pair(conv, u) for u in users]
    assert ctx.redis.hmget(keys.READS_PENDING, members) == [None] * len(users)
    assert ctx.redis.hmget(keys.READS_FLUSHING, members) == [None] * len(users)
    before = len(ctx.events)
    aggregation.flush(ctx)
    assert len(mine(ctx, conv)) == len(receipts_sent) + len(updates) and len(ctx.events) >= before
    # Every change reached Kafka, once per target (same event_id on a redo).
    want = {envelope.stable_event_id("receipt.updated", conv, u, str(10 + i), str(10 + i))
            for i, u in enumerate(users)}
    assert set(consume_event_ids(support.SETTINGS.topic("receipts"), want, timeout=15)) == want


def test_reads_within_the_window_wait_for_it_and_carry_the_newest_watermark(ctx):
    conv, users = setup_reads(ctx, n_users=1)
    aggregation.flush(ctx)
    assert [e[1]["seq"] for e in mine(ctx, conv) if e[0] == "read_receipt"] == [10]
    for seq in (11, 12, 13):
        receipts.record_read(ctx, Actor(user_id=users[0]), conv, seq, private=False)
    aggregation.flush(ctx)  # within the window: nothing yet
    assert [e[1]["seq"] for e in mine(ctx, conv) if e[0] == "read_receipt"] == [10]
    time.sleep(support.SETTINGS.receipt_window_s)
    aggregation.flush(ctx)
    assert [e[1]["seq"] for e in mine(ctx, conv) if e[0] == "read_receipt"] == [10, 13]


@pytest.mark.parametrize("read", ["receipts_get", "unread_get"])
def test_a_run_between_the_readers_two_reads_is_not_missed(ctx, monkeypatch, read):
    """receipts_get and unread_get read the database and Redis's pending/flushing reads;
    a whole aggregation run (staged, written, done) between the two reads must not hide
    the read from both."""
    conv, users = setup_reads(ctx, n_users=2)
    reader = users[0]
    ran = []

    def run_the_aggregation_after(real):
        def read_then_aggregate(*args, **kwargs):
            result = real(*args, **kwargs)
            if not ran:
                ran.append(real.__name__)
                aggregation.flush(ctx)
            return result
        return read_then_aggregate

    monkeypatch.setattr(receipts, "stored_reads", run_the_aggregation_after(receipts.stored_reads))
    monkeypatch.setattr(receipts, "_not_aggregated", run_the_aggregation_after(receipts._not_aggregated))
    if read == "receipts_get":
        watermarks = receipts.receipts_get(reader, conv, ctx.redis)
        assert watermarks == {users[0]: 10, users[1]: 11}
    else:
        assert receipts.unread_get(reader, ctx.redis)[conv] == 50 - 10
    assert ran and ReadState.objects(conversation_id=conv, user_id=reader).first().seq == 10
