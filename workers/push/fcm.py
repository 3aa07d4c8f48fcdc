"""FCM HTTP v1: OAuth2 service-account token (RS256 JWT bearer grant, cached until
shortly before it expires) and `POST /v1/projects/{project}/messages:send`."""
from __future__ import annotations

import threading
import time

import httpx
import jwt
import orjson

from realtime.settings import Settings

from . import common

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_TTL_S = 3600
# Refresh the access token this long before it expires.
TOKEN_MARGIN_S = 60


class AccessTokens:
    """The service account's OAuth2 access token, shared by the process's tasks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._token: tuple[str, float] | None = None
        self._credentials: tuple[str, dict] | None = None

    def credentials(self, settings: Settings) -> dict:
        path = settings.fcm_credentials_file
        if not path:
            raise RuntimeError("FCM_CREDENTIALS_FILE is not set")
        if self._credentials is None or self._credentials[0] != path:
            with open(path, "rb") as fh:
                self._credentials = (path, orjson.loads(fh.read()))
        return self._credentials[1]

    def get(self, settings: Settings, now: float | None = None) -> str:
        now = time.time() if now is None else now
        with self._lock:
            if self._token is not None and self._token[1] - TOKEN_MARGIN_S > now:
                return self._token[0]
            creds = self.credentials(settings)
            token_url = settings.fcm_token_url or creds.get("token_uri")
            assertion = jwt.encode(
                {"iss": creds["client_email"], "scope": SCOPE, "aud": token_url,
                 "iat": int(now), "exp": int(now) + ASSERTION_TTL_S},
                creds["private_key"], algorithm="RS256",
                headers={"kid": creds.get("private_key_id")} if creds.get("private_key_id") else None)
            resp = common.client("fcm").post(token_url, data={"grant_type": GRANT_TYPE, "assertion": assertion})
            if resp.status_code != 200:
                raise TokenError(resp.status_code, resp.text[:200], resp.headers.get("retry-after"))
            body = resp.json()
            self._token = (body["access_token"], now + float(body.get("expires_in", 3600)))
            return self._token[0]

    def drop(self) -> None:
        with self._lock:
            self._token = None


class TokenError(RuntimeError):
    def __init__(self, status: int, text: str, retry_after: str | None):
        super().__init__(f"token exchange failed: {status} {text}")
        self.status = status
        self.retry_after = retry_after


tokens = AccessTokens()


def data_of(payload: dict) -> dict[str, str]:
    """FCM `data` is a map of strings: numbers as decimal text, absent keys left out."""
    return {k: v if isinstance(v, str) else orjson.dumps(v).decode()
            for k, v in payload.items() if v is not None}


def _error_code(resp: httpx.Response) -> str:
    try:
        error = resp.json().get("error") or {}
    except ValueError:
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return detail["errorCode"]
    return error.get("status") or ""


def send(settings: Settings, token: str, payload: dict, collapse_key: str | None = None) -> common.Outcome:
    try:
        access = tokens.get(settings)
    except TokenError as exc:
        if common.transient(exc.status):
            return common.Outcome(common.RETRY, exc.status, str(exc), common.retry_after(exc.retry_after))
        return common.Outcome(common.FAILED, exc.status, str(exc))
    except httpx.TransportError as exc:
        return common.Outcome(common.RETRY, None, f"token exchange: {type(exc).__name__}: {exc}")
    silent = payload.get("type") == "clear"
    message = {
        "token": token,
        "data": data_of(payload),
        "android": {"priority": "normal" if silent else "high"},
    }
    if collapse_key:
        message["android"]["collapse_key"] = collapse_key
    url = f"{settings.fcm_endpoint}/v1/projects/{settings.fcm_project_id}/messages:send"
    try:
        resp = common.client("fcm").post(url, json={"message": message},
                                          headers={"Authorization": f"Bearer {access}"})
    except httpx.TransportError as exc:
        return common.Outcome(common.RETRY, None, f"{type(exc).__name__}: {exc}")
    if resp.status_code == 401:
        tokens.drop()  # expired or revoked early: the retry exchanges a new one
        return common.Outcome(common.RETRY, 401, "access token refused", 0.0)
    code = _error_code(resp) if resp.status_code >= 400 else ""
    return common.from_response(resp, gone=code == "UNREGISTERED", reason=code)
