"""APNs over HTTP/2 with provider-token auth (ES256 JWT), `apns-topic` and
`apns-push-type` headers. An `http://` APNS_ENDPOINT is spoken as h2c with prior
knowledge (local test servers); `https://` negotiates h2 by ALPN."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import orjson

import jwt
from realtime.settings import Settings

from . import common

# Apple refuses tokens older than an hour and throttles refreshing more often
# than every 20 minutes.
TOKEN_REUSE_S = 50 * 60
EXPIRATION_S = 24 * 3600
GONE_REASONS = {"Unregistered", "BadDeviceToken"}


class ProviderToken:
    def __init__(self):
        self._lock = threading.Lock()
        self._token: tuple[str, float, tuple] | None = None

    def get(self, settings: Settings, now: float | None = None) -> str:
        now = time.time() if now is None else now
        ident = (settings.apns_key_file, settings.apns_key_id, settings.apns_team_id)
        with self._lock:
            if self._token is None or self._token[2] != ident or now - self._token[1] > TOKEN_REUSE_S:
                if not settings.apns_key_file:
                    raise RuntimeError("APNS_KEY_FILE is not set")
                with open(settings.apns_key_file, "rb") as fh:
                    key = fh.read()
                token = jwt.encode({"iss": settings.apns_team_id, "iat": int(now)}, key,
                                   algorithm="ES256", headers={"kid": settings.apns_key_id})
                self._token = (token, now, ident)
            return self._token[0]

    def drop(self) -> None:
        with self._lock:
            self._token = None


provider_token = ProviderToken()


def _client(settings: Settings) -> httpx.Client:
    prior_knowledge = settings.apns_endpoint.startswith("http://")
    return common.client("apns", http2=True, http1=not prior_knowledge)


def body_of(payload: dict) -> dict:
    if payload.get("type") == "clear":
        return {"aps": {"content-available": 1, "badge": payload.get("badge", 0)}, "chat": payload}
    return {"aps": {"alert": {"title": payload.get("title", ""), "body": payload.get("body", "")},
                    "badge": payload.get("badge", 0), "sound": "default",
                    "thread-id": payload.get("conversation_id", "")},
            "chat": payload}


def send(settings: Settings, token: str, payload: dict, idempotency_key: str,
         collapse_id: str | None = None, now: float | None = None) -> common.Outcome:
    now = time.time() if now is None else now
    silent = payload.get("type") == "clear"
    headers = {
        "authorization": f"bearer {provider_token.get(settings, now)}",
        "apns-topic": settings.apns_topic or "",
        "apns-push-type": "background" if silent else "alert",
        "apns-priority": "5" if silent else "10",
        "apns-expiration": str(int(now + EXPIRATION_S)),
        # Same key, same apns-id: a resend is recognisable on the device side.
        "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, idempotency_key)),
    }
    if collapse_id:
        headers["apns-collapse-id"] = collapse_id[:64]
    url = f"{settings.apns_endpoint}/3/device/{token}"
    try:
        resp = _client(settings).post(url, content=orjson.dumps(body_of(payload)), headers=headers)
    except httpx.TransportError as exc:
        return common.Outcome(common.RETRY, None, f"{type(exc).__name__}: {exc}")
    reason = ""
    if resp.status_code >= 400:
        try:
            reason = resp.json().get("reason", "")
        except ValueError:
            reason = ""
    if resp.status_code == 403 and reason == "ExpiredProviderToken":
        provider_token.drop()
        return common.Outcome(common.RETRY, 403, reason, 0.0)
    gone = resp.status_code == 410 or (resp.status_code == 400 and reason in GONE_REASONS)
    return common.from_response(resp, gone=gone, reason=reason)
