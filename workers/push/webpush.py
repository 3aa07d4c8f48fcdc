"""Web Push: RFC 8030 (protocol), RFC 8291 (aes128gcm message encryption), RFC 8292
(VAPID), implemented on `cryptography` and PyJWT.

pywebpush was not used: its current releases pull in aiohttp and a second HTTP
stack; the encryption is ~30 lines and is checked by the tests against an
independent decryption.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
import threading
import time
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from realtime.settings import Settings

from . import common

# Record size announced in the header; one record carries the whole payload.
RECORD_SIZE = 4096
# How long the push service keeps an undelivered message (seconds).
TTL_S = 24 * 3600
# VAPID JWTs are valid for 12 h (RFC 8292 allows up to 24 h); reused for 1 h.
VAPID_TTL_S = 12 * 3600
VAPID_REUSE_S = 3600


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def encrypt(plaintext: bytes, p256dh: str, auth: str, *, salt: bytes | None = None,
            server_key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """aes128gcm content coding of RFC 8291 §3.4 / RFC 8188, one record."""
    ua_public = b64url_decode(p256dh)
    auth_secret = b64url_decode(auth)
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    server_key = server_key or ec.generate_private_key(ec.SECP256R1())
    as_public = server_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    salt = salt or os.urandom(16)
    ecdh_secret = server_key.exchange(ec.ECDH(), ua_key)
    # HKDF with a single output block is one HMAC each for extract and expand.
    prk_key = _hmac(auth_secret, ecdh_secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = _hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    if len(plaintext) + 1 + 16 > RECORD_SIZE:
        raise ValueError("payload too large for one record")
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: last record
    header = salt + struct.pack("!IB", RECORD_SIZE, len(as_public)) + as_public
    return header + record


class Vapid:
    """The application server's VAPID identity: signs `Authorization: vapid` headers."""

    def __init__(self, private_key_b64: str, public_key_b64: str | None, subject: str):
        value = int.from_bytes(b64url_decode(private_key_b64), "big")
        self.key = ec.derive_private_key(value, ec.SECP256R1())
        derived = b64url(self.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
        if public_key_b64 and public_key_b64 != derived:
            raise ValueError("WEBPUSH_VAPID_PUBLIC_KEY does not match WEBPUSH_VAPID_PRIVATE_KEY")
        self.public_key = derived
        self.subject = subject
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def header(self, endpoint: str, now: float | None = None) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time() if now is None else now
        with self._lock:
            made = self._cache.get(audience)
            if made is None or now - made[0] > VAPID_REUSE_S:
                token = jwt.encode({"aud": audience, "exp": int(now + VAPID_TTL_S), "sub": self.subject},
                                   self.key, algorithm="ES256", headers={"typ": "JWT"})
                made = (now, token)
                self._cache[audience] = made
        return f"vapid t={made[1]}, k={self.public_key}"


_vapid: tuple[tuple, Vapid] | None = None


def vapid_for(settings: Settings) -> Vapid:
    global _vapid
    ident = (settings.webpush_vapid_private_key, settings.webpush_vapid_public_key,
             settings.webpush_vapid_subject)
    if _vapid is None or _vapid[0] != ident:
        if not settings.webpush_vapid_private_key:
            raise RuntimeError("WEBPUSH_VAPID_PRIVATE_KEY is not set")
        _vapid = (ident, Vapid(*ident))
    return _vapid[1]


def topic(conversation_id: str) -> str:
    """RFC 8030 Topic (≤ 32 base64url chars): a newer push replaces an undelivered
    older one of the same conversation, which also collapses a rare resend."""
    return b64url(hashlib.sha256(conversation_id.encode()).digest()[:18])


def send(settings: Settings, subscription: dict, payload: dict) -> common.Outcome:
    endpoint = subscription["endpoint"]
    keys = subscription.get("keys") or {}
    body = encrypt(orjson.dumps(payload), keys["p256dh"], keys["auth"])
    silent = payload.get("type") == "clear"
    headers = {
        "Authorization": vapid_for(settings).header(endpoint),
        "TTL": str(TTL_S),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Urgency": "normal" if silent else "high",
    }
    if payload.get("conversation_id"):
        headers["Topic"] = topic(payload["conversation_id"])
    try:
        resp = common.client("webpush").post(endpoint, content=body, headers=headers)
    except httpx.TransportError as exc:
        return common.Outcome(common.RETRY, None, f"{type(exc).__name__}: {exc}")
    return common.from_response(resp, gone=resp.status_code in (404, 410))
