"""Per-device delivery: idempotency key, gone tokens, transient failures, isolation.

Runs the delivery function in this process (real Redis and MongoDB of the stack)
against a local Web Push service; the stack's worker is not involved.
"""
import dataclasses
import threading

import pytest

from devtools import push_servers
from realtime import keys, timeutil
from realtime.actions import notifications
from realtime.actions.context import Context
from realtime.models import Notification, PushDevice
from realtime.notifications import policy, store
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique
from workers.push import delivery


@pytest.fixture(scope="module")
def service():
    s = push_servers.WebPushService().start()
    yield s
    s.stop()


@pytest.fixture
def ctx():
    emitted = []
    c = Context(settings=support.SETTINGS, redis=make_redis(support.SETTINGS),
                emit=lambda event, data, *, room, skip_sid=None: emitted.append((event, data, room)),
                source="realtime/test/push")
    c.emitted = emitted
    return c


def push_to(user: str, sub: push_servers.Subscriber, device: str = "d1") -> tuple[str, str]:
    """A stored push for `user` and a registered device: (push id, device key)."""
    store.register_device(user, device, "webpush", None, sub.subscription(), timeutil.now())
    note = Notification(id=unique("n"), user_id=user, kind="message", conversation_id="c1", title="t",
                        body="b", delivery="push", created_at=timeutil.utc_datetime(timeutil.now()),
                        push=policy.payload("message", "c1", 1, 1, "t", "b", message_id="m1"))
    note.save(force_insert=True)
    return note.id, PushDevice.key(user, device)


def test_delivered_once_even_when_the_task_runs_again(ctx, service):
    sub = push_servers.Subscriber(service.endpoint())
    push_id, device = push_to(unique("u"), sub)
    path = sub.endpoint[len(service.url):]
    assert delivery.deliver(ctx, push_id, device) == delivery.DELIVERED
    assert delivery.deliver(ctx, push_id, device) == delivery.DUPLICATE
    assert len(service.matching(lambda r: r["path"] == path)) == 1


def test_worker_killed_after_sending_then_redelivered_sends_nothing(ctx, service):
    """acks_late: the worker dies after the provider accepted, before the ack; the
    broker hands the task out again."""
    sub = push_servers.Subscriber(service.endpoint())
    push_id, device = push_to(unique("u"), sub)
    path = sub.endpoint[len(service.url):]

    class Killed(BaseException):
        pass

    def die():
        raise Killed()

    with pytest.raises(Killed):
        delivery.deliver(ctx, push_id, device, after_send=die)
    assert delivery.deliver(ctx, push_id, device) == delivery.DUPLICATE
    assert len(service.matching(lambda r: r["path"] == path)) == 1


def test_redelivery_while_the_first_is_in_flight_waits(ctx, service):
    sub = push_servers.Subscriber(service.endpoint())
    push_id, device = push_to(unique("u"), sub)
    path = sub.endpoint[len(service.url):]
    # The first attempt holds the lease (a live worker, or a dead one whose lease runs on).
    ctx.redis.set(keys.push_delivery(delivery.idempotency_key(push_id, device)), "inflight", ex=30)
    with pytest.raises(delivery.RetryLater) as err:
        delivery.deliver(ctx, push_id, device)
    assert err.value.retry_after > 0
    assert service.matching(lambda r: r["path"] == path) == []


def test_gone_410_removes_the_device(ctx, service):
    user = unique("u")
    sub = push_servers.Subscriber(service.endpoint())
    push_id, device = push_to(user, sub)
    service.script(sub.endpoint[len(service.url):], (410, {}, b""))
    assert delivery.deliver(ctx, push_id, device) == delivery.REMOVED
    assert store.device(device) is None


def test_transient_failure_releases_the_key_for_the_retry(ctx, service):
    sub = push_servers.Subscriber(service.endpoint())
    push_id, device = push_to(unique("u"), sub)
    path = sub.endpoint[len(service.url):]
    service.script(path, (503, {"retry-after": "2"}, b""))
    with pytest.raises(delivery.RetryLater) as err:
        delivery.deliver(ctx, push_id, device)
    assert err.value.retry_after == 2
    assert delivery.deliver(ctx, push_id, device) == delivery.DELIVERED
    assert [r["status"] for r in service.matching(lambda r: r["path"] == path)] == [503, 201]


def test_one_task_per_device_and_a_failing_device_blocks_no_other(ctx, service):
    user, sender = unique("u"), unique("s")
    conv = support.make_conversation([user, sender])
    good, bad = push_servers.Subscriber(service.endpoint()), push_servers.Subscriber(service.endpoint())
    store.register_device(user, "good", "webpush", None, good.subscription(), timeutil.now())
    store.register_device(user, "bad", "webpush", None, bad.subscription(), timeutil.now())
    service.script(bad.endpoint[len(service.url):], *[(500, {}, b"")] * 3)
    queued = []
    from realtime.models import Conversation, Message
    message = Message(id=unique("m"), conversation_id=conv, seq=1, sender_id=sender, body="hello",
                      created_at=timeutil.utc_datetime(timeutil.now()))
    outcome = notifications.on_message(ctx, Conversation.objects(id=conv).first(), message,
                                       enqueue=lambda name, args, countdown=None: queued.append((name, args)))
    assert outcome == {user: "push"}
    assert sorted(args[1] for _, args in queued) == sorted([PushDevice.key(user, "good"), PushDevice.key(user, "bad")])
    results = {}
    for _, (push_id, device) in queued:
        try:
            results[device] = delivery.deliver(ctx, push_id, device)
        except delivery.RetryLater:
            results[device] = "retry"
    assert results == {PushDevice.key(user, "good"): delivery.DELIVERED, PushDevice.key(user, "bad"): "retry"}
    [req] = service.matching(lambda r: r["path"] == good.endpoint[len(service.url):])
    assert good.decrypt(req["body"])["body"] == "hello"


def test_concurrent_redeliveries_send_once(ctx, service):
    sub = push_servers.Subscriber(service.endpoint())
    push_id, device = push_to(unique("u"), sub)
    path = sub.endpoint[len(service.url):]
    results = []

    def run():
        try:
            results.append(delivery.deliver(dataclasses.replace(ctx), push_id, device))
        except delivery.RetryLater:
            results.append("retry")

    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(delivery.DELIVERED) == 1
    assert len(service.matching(lambda r: r["path"] == path)) == 1
