"""Notifications end to end (PROTOCOL §8): real edge nodes, the stack's Celery
worker, and local stand-ins for the push services (devtools/push_servers.py).

Web Push endpoints come from the subscription, so any port works; FCM and APNs
are served on the fixed ports scripts/test.sh configured the stack with.
"""
import json
import os
import time

import pytest

from devtools import push_servers
from realtime import connections, keys, taskqueue
from realtime.models import Notification, PushDevice
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique
from tests.workers.test_kafka_relay import consume_event_ids

R = make_redis(support.SETTINGS)
FCM_PORT, APNS_PORT = 18441, 18442
QUIET_S = 1.5  # how long "nothing arrives" is watched


@pytest.fixture(scope="module")
def webpush():
    service = push_servers.WebPushService().start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def fcm_service():
    env = support.stack_env()
    if not env.get("FCM_CREDENTIALS_FILE", "").endswith(".json") or FCM_PORT != int(env["FCM_ENDPOINT"].rsplit(":", 1)[1]):
        pytest.skip("stack not configured with the local FCM stand-in (run through make test)")
    with open(env["FCM_CREDENTIALS_FILE"]) as fh:
        service = push_servers.FCMService(json.load(fh), port=FCM_PORT).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def apns_service():
    env = support.stack_env()
    if not env.get("APNS_KEY_FILE") or not os.path.exists(env["APNS_KEY_FILE"]):
        pytest.skip("stack not configured with the local APNs stand-in (run through make test)")
    service = push_servers.APNsService(env["APNS_KEY_FILE"], env["APNS_KEY_ID"], env["APNS_TEAM_ID"],
                                       env["APNS_TOPIC"], port=APNS_PORT).start()
    yield service
    service.stop()


def go_offline(client: support.Client) -> None:
    client.close()
    support.eventually(lambda: not connections.is_connected(R, client.user), message="user offline")


def register(clients, user: str, device: str, **payload) -> support.Client:
    c = clients(support.EDGE1, user=user, device_id=device)
    ack = c.call("push_register", payload)
    assert ack["ok"], ack
    return c


def offline_webpush_user(clients, webpush, user: str, device: str = "web1") -> push_servers.Subscriber:
    sub = push_servers.Subscriber(webpush.endpoint())
    go_offline(register(clients, user, device, platform="webpush", subscription=sub.subscription()))
    return sub


def pushes_to(webpush, sub):
    path = sub.endpoint[len(webpush.url):]
    return webpush.matching(lambda r: r["path"] == path and r["status"] == 201)


def wait_pushes(webpush, sub, count=1, timeout=support.SHORT_WAIT_S):
    path = sub.endpoint[len(webpush.url):]
    return webpush.wait(lambda r: r["path"] == path and r["status"] == 201, count, timeout)


def send(client, conv, body, key=None):
    ack = client.call("message_send", {"conversation_id": conv, "client_msg_id": key or unique("k"), "body": body})
    assert ack["ok"], ack
    return ack["message"]


def test_push_config_and_validation(clients):
    c = clients(support.EDGE1, user=unique("u"))
    ack = c.call("push_config", {})
    assert ack == {"ok": True, "vapid_public_key": support.SETTINGS.webpush_vapid_public_key}
    bad = [
        {"platform": "sms", "token": "x"},
        {"platform": "fcm"},
        {"platform": "webpush", "subscription": {"endpoint": "ftp://x", "keys": {}}},
        {"platform": "webpush", "subscription": {"endpoint": "https://push.example/x",
                                                 "keys": {"p256dh": "AAAA", "auth": "AAAA"}}},
    ]
    for payload in bad:
        assert c.call("push_register", payload)["error"]["code"] == "invalid_payload", payload
    assert c.call("notification_settings", {"level": "loud"})["error"]["code"] == "invalid_payload"
    assert c.call("notification_settings", {"conversation_id": unique("nope"), "level": "all"})["error"]["code"] == "not_found"
    assert c.call("push_unregister", {"device_id": "never-registered"}) == {"ok": True}


def test_offline_push_online_elsewhere_in_app_in_room_nothing(clients, webpush):
    alice, bob, carol, dave = (unique(n) for n in ("alice", "bob", "carol", "dave"))
    conv = support.make_conversation([alice, bob, carol, dave])
    bob_sub = offline_webpush_user(clients, webpush, bob)
    dave_sub = push_servers.Subscriber(webpush.endpoint())
    d = register(clients, dave, "dave-web", platform="webpush", subscription=dave_sub.subscription())
    assert d.call("join_room", {"conversation_id": conv})["ok"]
    c = clients(support.EDGE2, user=carol)
    a = clients(support.EDGE1, user=alice)
    vapid_key = a.call("push_config", {})["vapid_public_key"]

    message = send(a, conv, "hello bob")

    [req] = wait_pushes(webpush, bob_sub)
    push_servers.verify_vapid(req["headers"]["authorization"], webpush.url, vapid_key)
    assert req["headers"]["content-encoding"] == "aes128gcm"
    assert bob_sub.decrypt(req["body"]) == {
        "type": "message", "conversation_id": conv, "count": 1, "badge": 1, "title": alice,
        "body": "hello bob", "message_id": message["id"]}

    note = c.wait_for("notification")
    assert note["kind"] == "message" and note["conversation_id"] == conv and note["title"] == alice
    assert note["body"] == "hello bob" and note["data"]["message_id"] == message["id"]
    assert note["created_at"].endswith("Z") and set(note) == {"id", "kind", "conversation_id", "title", "body",
                                                              "created_at", "data"}
    stored = Notification.objects(id=note["id"]).first()
    assert stored is not None and stored.user_id == carol and stored.delivery == "in_app"

    time.sleep(QUIET_S)
    assert d.received("notification") == [] and pushes_to(webpush, dave_sub) == []
    assert a.received("notification") == []  # never about one's own message
    assert len(pushes_to(webpush, bob_sub)) == 1

    from realtime.actions.notifications import notification_id
    bob_note = notification_id("message", bob, message["id"])
    from realtime import envelope
    want = {envelope.stable_event_id("notification.created", note["id"]),
            envelope.stable_event_id("notification.created", bob_note)}
    seen = consume_event_ids(support.SETTINGS.topic("notifications"), want, timeout=15)
    assert set(seen) == want
    ev = seen[envelope.stable_event_id("notification.created", note["id"])]
    assert ev["type"] == "notification.created" and ev["user_id"] == carol and ev["data"]["notification"] == note


def test_muted_and_level_none_get_nothing(clients, webpush):
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    conv = support.make_conversation([alice, bob, carol])
    sub = push_servers.Subscriber(webpush.endpoint())
    b = register(clients, bob, "web1", platform="webpush", subscription=sub.subscription())
    assert b.call("notification_settings", {"level": "none"})["settings"] == {
        "conversation_id": None, "level": "none", "muted_until": None}
    go_offline(b)
    c = clients(support.EDGE2, user=carol)
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    ack = c.call("notification_settings", {"conversation_id": conv, "muted_until": until})
    assert ack["ok"] and ack["settings"]["muted_until"] == until and ack["settings"]["level"] == "all"
    a = clients(support.EDGE1, user=alice)
    first = send(a, conv, "anyone?")
    # The worker decides asynchronously, reading the settings when it runs. Unmute
    # only once it decided about "anyone?" (the cursor is written after that pass's
    # records, emits and queued pushes), or a lagging worker would see carol unmuted.
    support.eventually(lambda: int(R.get(keys.notify_cursor(conv)) or 0) >= first["seq"], timeout=15,
                       message="notifications for 'anyone?' decided")
    time.sleep(QUIET_S)  # an emit or push already under way would land by now
    assert c.received("notification") == [] and pushes_to(webpush, sub) == []
    # Unmuted, carol hears the next one, and only that one.
    assert c.call("notification_settings", {"conversation_id": conv, "muted_until": None})["ok"]
    send(a, conv, "now?")
    c.wait_for("notification", lambda n: n["body"] == "now?")
    assert [n["body"] for n in c.received("notification")] == ["now?"]
    assert pushes_to(webpush, sub) == []


def test_mention_passes_level_mentions(clients, webpush):
    alice, carol = unique("alice"), unique("carol")
    conv = support.make_conversation([alice, carol])
    c = clients(support.EDGE2, user=carol)
    assert c.call("notification_settings", {"conversation_id": conv, "level": "mentions"})["ok"]
    a = clients(support.EDGE1, user=alice)
    send(a, conv, "plain message")
    send(a, conv, f"hey @{carol}, look")
    note = c.wait_for("notification")
    assert note["kind"] == "mention" and note["body"] == f"hey @{carol}, look"
    time.sleep(0.5)
    assert len(c.received("notification")) == 1


def test_burst_of_ten_makes_at_most_two_pushes(clients, webpush):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    sub = offline_webpush_user(clients, webpush, bob)
    a = clients(support.EDGE1, user=alice)
    started = time.monotonic()
    for i in range(10):
        send(a, conv, f"burst {i}")
    sending_s = time.monotonic() - started

    def total():
        return sum(sub.decrypt(r["body"])["count"] for r in pushes_to(webpush, sub))
    # Wait for the whole burst to be pushed (the window's flush task can lag on a
    # loaded worker), then watch a quiet period: nothing more may follow.
    support.eventually(lambda: total() >= 10, timeout=10, message="the burst's ten messages pushed")
    time.sleep(QUIET_S)
    payloads = [sub.decrypt(r["body"]) for r in pushes_to(webpush, sub)]
    # One push per window: a burst sent within one window makes at most two (the
    # first at once, the rest at the window's end). Only a machine too loaded to
    # send ten messages within the window may see one more per extra window.
    allowed = 2 + int(sending_s // support.SETTINGS.push_coalesce_s)
    assert 1 <= len(payloads) <= allowed, (sending_s, payloads)
    assert sum(p["count"] for p in payloads) == 10
    assert payloads[-1]["body"] == "burst 9" and payloads[-1]["badge"] == 10


def test_503_then_200_delivers_exactly_once(clients, webpush):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    sub = offline_webpush_user(clients, webpush, bob)
    path = sub.endpoint[len(webpush.url):]
    webpush.script(path, (503, {"retry-after": "1"}, b""))
    a = clients(support.EDGE1, user=alice)
    send(a, conv, "retry me")
    statuses = lambda: [r["status"] for r in webpush.matching(lambda r: r["path"] == path)]  # noqa: E731
    support.eventually(lambda: statuses() == [503, 201], timeout=8, message="503 then 201")
    time.sleep(QUIET_S)
    assert statuses() == [503, 201]
    assert sub.decrypt(pushes_to(webpush, sub)[0]["body"])["body"] == "retry me"


def test_fcm_and_apns_devices_get_the_push(clients, fcm_service, apns_service):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    fcm_token, apns_token = unique("fcmtok"), unique("apnstok").replace("-", "")
    b = register(clients, bob, "android1", platform="fcm", token=fcm_token)
    assert b.call("push_register", {"device_id": "iphone1", "platform": "apns", "token": apns_token})["ok"]
    go_offline(b)
    a = clients(support.EDGE1, user=alice)
    message = send(a, conv, "to phones")
    [f] = fcm_service.wait(lambda r: r["token"] == fcm_token)
    assert f["headers"]["authorization"].startswith("Bearer ya29.")
    assert f["message"]["data"] == {"type": "message", "conversation_id": conv, "count": "1", "badge": "1",
                                    "title": alice, "body": "to phones", "message_id": message["id"]}
    [p] = apns_service.wait(lambda r: r["token"] == apns_token)
    assert p["status"] == 200 and p["headers"]["apns-push-type"] == "alert"
    assert p["headers"]["apns-topic"] == support.stack_env()["APNS_TOPIC"]
    assert p["body"]["chat"]["message_id"] == message["id"] and p["body"]["aps"]["alert"]["body"] == "to phones"


def test_provider_reports_gone_devices_are_removed(clients, fcm_service, apns_service, webpush):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    fcm_token, apns_token = unique("fcmdead"), unique("apnsdead").replace("-", "")
    fcm_service.unregistered.add(fcm_token)
    apns_service.unregistered.add(apns_token)
    sub = push_servers.Subscriber(webpush.endpoint())
    webpush.script(sub.endpoint[len(webpush.url):], (410, {}, b""))
    b = register(clients, bob, "android1", platform="fcm", token=fcm_token)
    assert b.call("push_register", {"device_id": "iphone1", "platform": "apns", "token": apns_token})["ok"]
    assert b.call("push_register", {"device_id": "web1", "platform": "webpush",
                                    "subscription": sub.subscription()})["ok"]
    go_offline(b)
    assert PushDevice.objects(user_id=bob).count() == 3
    send(clients(support.EDGE1, user=alice), conv, "anyone there?")
    support.eventually(lambda: PushDevice.objects(user_id=bob).count() == 0, timeout=8,
                       message="gone devices removed")


def test_call_missed_entry_point(clients, webpush):
    caller, bob, carol = unique("caller"), unique("bob"), unique("carol")
    conv = support.make_conversation([caller, bob, carol])
    sub = offline_webpush_user(clients, webpush, bob)
    c = clients(support.EDGE2, user=carol)
    call_id = unique("call")
    taskqueue.send(taskqueue.PUSH_CALL_MISSED, [call_id, conv, caller, [bob, carol]])
    [req] = wait_pushes(webpush, sub)
    payload = sub.decrypt(req["body"])
    assert payload["type"] == "call_missed" and payload["call_id"] == call_id and payload["conversation_id"] == conv
    note = c.wait_for("notification")
    assert note["kind"] == "call_missed" and note["data"]["call_id"] == call_id


def test_clear_goes_silently_to_the_other_devices(clients, webpush):
    bob = unique("bob")
    conv = support.make_conversation([bob, unique("alice")])
    reading = push_servers.Subscriber(webpush.endpoint())
    other = push_servers.Subscriber(webpush.endpoint())
    b = register(clients, bob, "laptop", platform="webpush", subscription=reading.subscription())
    assert b.call("push_register", {"device_id": "phone", "platform": "webpush",
                                    "subscription": other.subscription()})["ok"]
    taskqueue.send(taskqueue.PUSH_CLEAR, [bob, conv, "laptop"])
    [req] = wait_pushes(webpush, other)
    assert other.decrypt(req["body"]) == {"type": "clear", "conversation_id": conv, "count": 0, "badge": 0,
                                          "title": "", "body": ""}
    assert req["headers"]["urgency"] == "normal"
    time.sleep(0.5)
    assert pushes_to(webpush, reading) == []
