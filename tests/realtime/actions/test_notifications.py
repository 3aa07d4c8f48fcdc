"""Push coalescing across the decision and flush tasks (realtime.actions.notifications),
on the stack's Redis and database, with an injected clock and the queued tasks recorded
instead of sent."""
import pytest

from realtime import keys, taskqueue, timeutil
from realtime.actions import notifications
from realtime.actions.context import Context
from realtime.models import Message, Notification
from realtime.notifications import store
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique

T0 = 1_900_000_000.0


class Clock:
    def __init__(self, at: float):
        self.at = at

    def __call__(self) -> float:
        return self.at


class Queue:
    """What an action queued: (task name, args, countdown)."""

    def __init__(self):
        self.tasks = []

    def __call__(self, name, args, countdown=None):
        self.tasks.append((name, args, countdown))

    def named(self, name):
        return [t for t in self.tasks if t[0] == name]


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def ctx(clock):
    return Context(settings=support.SETTINGS, redis=make_redis(support.SETTINGS), emit=lambda *a, **k: None,
                   source="realtime/test/notifications", clock=clock)


def store_message(conv: str, seq: int, sender: str, at: float) -> Message:
    message = Message(id=unique("msg"), conversation_id=conv, seq=seq, sender_id=sender, body=f"burst {seq}",
                      created_at=timeutil.utc_datetime(at))
    message.save(force_insert=True)
    return message


@pytest.fixture
def offline_pair(clock):
    """(conversation, sender, recipient): the recipient has no socket and one phone."""
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    store.register_device(bob, "phone", "fcm", unique("fcmtok"), None, clock())
    return conv, alice, bob


def pushed_count(queue: Queue) -> list[int]:
    """The count each queued delivery carries, from the record it delivers."""
    return [Notification.objects(id=args[0]).first().push["count"]
            for _, args, _ in queue.named(taskqueue.PUSH_DELIVER)]


def test_a_burst_whose_decisions_lag_past_the_window_is_still_one_more_push(ctx, clock, offline_pair):
    conv, alice, bob = offline_pair
    window_s = support.SETTINGS.push_coalesce_s
    queue = Queue()

    # The first message is pushed at once and opens the window.
    store_message(conv, 1, alice, T0)
    clock.at = T0 + 0.01
    assert notifications.conversation_activity(ctx, conv, T0, queue) == 1
    assert pushed_count(queue) == [1]

    # The second is deferred into it: a flush is scheduled for the window's end.
    store_message(conv, 2, alice, T0 + 0.05)
    clock.at = T0 + 0.06
    assert notifications.conversation_activity(ctx, conv, T0 + 0.05, queue) == 1
    [(_, flush_args, countdown)] = queue.named(taskqueue.PUSH_FLUSH)
    assert flush_args == [bob, conv] and countdown == pytest.approx(window_s - 0.06)

    # The other eight are stored within the window, but their decision task waits
    # behind other work until after the window ended, when the flush runs.
    for seq in range(3, 11):
        store_message(conv, seq, alice, T0 + 0.05 * seq)
    clock.at = T0 + window_s + 0.5
    assert notifications.flush(ctx, bob, conv, queue) == 1
    assert pushed_count(queue) == [1, 9]
    latest = Notification.objects(id=queue.named(taskqueue.PUSH_DELIVER)[-1][1][0]).first()
    assert latest.push["body"] == "burst 10"

    # Their own decision task, late, finds them decided: no third push, no new window.
    clock.at = T0 + window_s + 0.6
    assert notifications.conversation_activity(ctx, conv, T0 + 0.5, queue) == 0
    assert pushed_count(queue) == [1, 9] and len(queue.named(taskqueue.PUSH_FLUSH)) == 1
    assert int(ctx.redis.get(keys.notify_cursor(conv))) == 10


def test_a_flush_before_the_window_ends_pushes_nothing_and_comes_back_then(ctx, clock, offline_pair):
    conv, alice, bob = offline_pair
    queue = Queue()
    store_message(conv, 1, alice, T0)
    store_message(conv, 2, alice, T0 + 0.05)
    clock.at = T0 + 0.1
    assert notifications.conversation_activity(ctx, conv, T0, queue) == 2
    assert pushed_count(queue) == [1]

    store_message(conv, 3, alice, T0 + 0.2)   # not decided yet, and not due either
    clock.at = T0 + 0.3                        # the scheduler's clock ran ahead
    assert notifications.flush(ctx, bob, conv, queue) == 0
    assert pushed_count(queue) == [1]
    [_, (_, _, again)] = queue.named(taskqueue.PUSH_FLUSH)
    assert again == pytest.approx(support.SETTINGS.push_coalesce_s - 0.3)
    assert int(ctx.redis.get(keys.notify_cursor(conv))) == 2   # deciding waits for its own task

