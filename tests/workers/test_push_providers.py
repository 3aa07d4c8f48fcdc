"""Each provider client against a local stand-in that checks what the real service
checks (devtools/push_servers.py): encryption and VAPID for Web Push, the OAuth2
token exchange for FCM, HTTP/2 and the ES256 provider token for APNs."""
import base64
import dataclasses

import pytest

from devtools import push_servers
from realtime.settings import Settings
from workers.push import apns, common, fcm, webpush

PAYLOAD = {"type": "message", "conversation_id": "c1", "count": 2, "badge": 5, "title": "alice",
           "body": "héllo", "message_id": "m1"}


def vapid_settings() -> Settings:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    key = ec.generate_private_key(ec.SECP256R1())
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return Settings(webpush_vapid_private_key=b64(key.private_numbers().private_value.to_bytes(32, "big")),
                    webpush_vapid_public_key=b64(key.public_key().public_bytes(
                        Encoding.X962, PublicFormat.UncompressedPoint)),
                    webpush_vapid_subject="mailto:ops@example.com")


@pytest.fixture
def webpush_service():
    service = push_servers.WebPushService().start()
    yield service
    service.stop()


def test_rfc8291_encryption_decrypts_independently():
    sub = push_servers.Subscriber("https://push.example/x")
    keys = sub.subscription()["keys"]
    body = webpush.encrypt(b'{"a": 1}', keys["p256dh"], keys["auth"])
    assert body[16:20] == (4096).to_bytes(4, "big") and body[20] == 65
    assert sub.decrypt(body) == {"a": 1}


def test_webpush_send_encrypts_and_signs(webpush_service):
    settings = vapid_settings()
    sub = push_servers.Subscriber(webpush_service.endpoint())
    outcome = webpush.send(settings, sub.subscription(), PAYLOAD)
    assert outcome.status == common.SENT and outcome.http_status == 201
    [req] = webpush_service.wait()
    h = req["headers"]
    assert h["content-encoding"] == "aes128gcm" and int(h["ttl"]) > 0 and h["urgency"] == "high"
    assert len(h["topic"]) <= 32
    push_servers.verify_vapid(h["authorization"], webpush_service.url, settings.webpush_vapid_public_key)
    assert sub.decrypt(req["body"]) == PAYLOAD


def test_webpush_outcomes(webpush_service):
    settings = vapid_settings()
    for status, expected in ((410, common.GONE), (404, common.GONE), (503, common.RETRY),
                             (429, common.RETRY), (400, common.FAILED)):
        sub = push_servers.Subscriber(webpush_service.endpoint())
        path = sub.endpoint[len(webpush_service.url):]
        webpush_service.script(path, (status, {"retry-after": "7"}, b""))
        outcome = webpush.send(settings, sub.subscription(), PAYLOAD)
        assert outcome.status == expected, (status, outcome)
        if expected == common.RETRY:
            assert outcome.retry_after == 7


def test_retry_after_parses_seconds_and_dates():
    assert common.retry_after("12") == 12
    assert common.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == 10
    assert common.retry_after("soon") is None


@pytest.fixture
def fcm_setup(tmp_path):
    path = str(tmp_path / "sa.json")
    service = push_servers.FCMService().start()
    service.use(push_servers.make_fcm_credentials(path, "proj-1", service.token_url))
    settings = Settings(fcm_project_id="proj-1", fcm_credentials_file=path, fcm_endpoint=service.url,
                        fcm_token_url=service.token_url)
    fcm.tokens.drop()
    yield service, settings
    fcm.tokens.drop()
    service.stop()


def test_fcm_token_exchange_then_send_with_cached_token(fcm_setup):
    service, settings = fcm_setup
    assert fcm.send(settings, "tok-1", PAYLOAD, collapse_key="c1").status == common.SENT
    assert fcm.send(settings, "tok-2", PAYLOAD).status == common.SENT
    assert service.token_requests == 1  # cached until expiry
    first = service.wait(lambda r: r["token"] == "tok-1")[0]
    assert first["message"]["data"] == {"type": "message", "conversation_id": "c1", "count": "2",
                                        "badge": "5", "title": "alice", "body": "héllo", "message_id": "m1"}
    assert first["message"]["android"] == {"priority": "high", "collapse_key": "c1"}


def test_fcm_unregistered_is_gone_and_503_retries(fcm_setup):
    service, settings = fcm_setup
    service.unregistered.add("dead")
    outcome = fcm.send(settings, "dead", PAYLOAD)
    assert outcome.status == common.GONE and outcome.reason == "UNREGISTERED"
    service.script("busy", (503, {"retry-after": "3"}, {"error": {"code": 503, "status": "UNAVAILABLE"}}))
    outcome = fcm.send(settings, "busy", PAYLOAD)
    assert outcome.status == common.RETRY and outcome.retry_after == 3
    assert fcm.send(settings, "busy", PAYLOAD).status == common.SENT


def test_fcm_refused_assertion_is_a_permanent_failure(fcm_setup, tmp_path):
    service, settings = fcm_setup
    other = str(tmp_path / "other.json")
    push_servers.make_fcm_credentials(other, "proj-1", service.token_url)  # a key the server does not know
    outcome = fcm.send(dataclasses.replace(settings, fcm_credentials_file=other), "tok", PAYLOAD)
    assert outcome.status == common.FAILED and outcome.http_status == 400


@pytest.fixture
def apns_setup(tmp_path):
    key = str(tmp_path / "AuthKey.p8")
    push_servers.make_apns_key(key)
    service = push_servers.APNsService(key, "KEY123", "TEAM123", "com.example.chat").start()
    settings = Settings(apns_key_file=key, apns_key_id="KEY123", apns_team_id="TEAM123",
                        apns_topic="com.example.chat", apns_endpoint=service.url)
    apns.provider_token.drop()
    common.reset_client("apns")
    yield service, settings
    common.reset_client("apns")
    service.stop()


def test_apns_http2_token_topic_and_push_type(apns_setup):
    service, settings = apns_setup
    assert apns.send(settings, "abc123", PAYLOAD, "k1", collapse_id="c1").status == common.SENT
    clear = dict(PAYLOAD, type="clear", count=0, title="", body="")
    assert apns.send(settings, "abc123", clear, "k2").status == common.SENT
    alert, background = service.wait(count=2)
    assert alert["headers"]["apns-push-type"] == "alert" and alert["headers"]["apns-topic"] == "com.example.chat"
    assert alert["headers"]["apns-collapse-id"] == "c1"
    assert alert["body"]["chat"] == PAYLOAD and alert["body"]["aps"]["badge"] == 5
    assert background["headers"]["apns-push-type"] == "background" and background["headers"]["apns-priority"] == "5"
    assert background["body"]["aps"]["content-available"] == 1


def test_apns_checks_and_gone_tokens(apns_setup):
    service, settings = apns_setup
    service.unregistered.add("gone1")
    service.bad_tokens.add("bad1")
    assert apns.send(settings, "gone1", PAYLOAD, "k").status == common.GONE
    assert apns.send(settings, "bad1", PAYLOAD, "k").status == common.GONE
    wrong_topic = apns.send(dataclasses.replace(settings, apns_topic="com.other"), "ok1", PAYLOAD, "k")
    assert wrong_topic.status == common.FAILED and wrong_topic.reason == "TopicDisallowed"
    apns.provider_token.drop()
    wrong_team = apns.send(dataclasses.replace(settings, apns_team_id="OTHER"), "ok1", PAYLOAD, "k")
    assert wrong_team.status == common.FAILED and wrong_team.reason == "InvalidProviderToken"
    apns.provider_token.drop()
    service.script("busy", (429, {"retry-after": "2"}, {"reason": "TooManyRequests"}))
    outcome = apns.send(settings, "busy", PAYLOAD, "k")
    assert outcome.status == common.RETRY and outcome.retry_after == 2
