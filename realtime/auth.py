"""JWT verification with pinned algorithms (PROTOCOL §2).

The verifier never trusts the token's header to pick how to verify: the header's
`alg` must be in the configured list, HS* tokens are checked with JWT_SECRET only
and RS*/ES*/PS* tokens with a configured public key only (selected by `kid`), so
neither `alg: none` nor algorithm confusion (an HMAC keyed with a public key) can
pass.

HS* tokens, what a chat backend usually issues, are verified here with the standard
library's `hmac` (`_hmac_claims`); PyJWT verifies the others. PyJWT spends ~45 µs on
an HS256 token, most of it checking each base64 character in Python and re-checking
the key for PEM and SSH formats on every call: a tenth of an edge node's CPU in a
connect storm (py-spy, bench W1). Either way, the claims are checked by one function
(`_check_claims`) with PyJWT's rules; `tests/realtime/test_auth.py` holds both paths
to PyJWT's verdicts on the same tokens.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

import jwt
import orjson

from .errors import AUTH_EXPIRED, AUTH_INVALID, ApiError
from .settings import Settings

# Longest token accepted (characters); longer is auth_invalid before any decoding.
MAX_TOKEN_CHARS = 8192
# The HMAC algorithms verified without PyJWT (RFC 7518 §3.2).
_HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# A base64url segment as JWS compact serialization writes it (RFC 7515 §2): the URL-safe
# alphabet, checked whole because the decoder skips what it does not know; the padding
# some issuers keep (AWS ALB) is accepted, as PyJWT does.
_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")   # bytes.translate: ~6x str.translate
_B64URL_VALUE = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}


@dataclass(frozen=True)
class Identity:
    user_id: str
    session_id: str | None
    device_id: str | None
    expires_at: float


def _unverified_header(token: str) -> dict:
    """The token's header, read before the signature is checked to choose the key and
    algorithm (for PyJWT's path, jwt.decode reads it again)."""
    segment, dot, _ = token.partition(".")
    try:
        if not dot:
            raise ValueError("no payload")
        header = orjson.loads(_b64url(segment))
    except (ValueError, binascii.Error):   # orjson.JSONDecodeError is a ValueError
        raise ApiError(AUTH_INVALID, "token malformed") from None
    if not isinstance(header, dict):
        raise ApiError(AUTH_INVALID, "token malformed")
    return header


def _key_for(header: dict, settings: Settings):
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in settings.jwt_algorithms:
        raise ApiError(AUTH_INVALID, "token algorithm not accepted")
    if alg.startswith("HS"):
        return settings.jwt_secret
    kid = header.get("kid")
    keys = settings.jwt_public_keys
    if kid is not None:
        if not isinstance(kid, str) or kid not in keys:
            raise ApiError(AUTH_INVALID, "unknown key id")
        return keys[kid]
    if "" in keys:
        return keys[""]
    if len(keys) == 1:
        return next(iter(keys.values()))
    raise ApiError(AUTH_INVALID, "token has no key id")


def _b64url(segment: str) -> bytes:
    """Decode a base64url segment as PyJWT does: nothing outside the alphabet, padding
    only to a multiple of 4, and only the canonical encoding of the bytes (unused low
    bits zero), so that no two spellings of one signature both verify."""
    if not _B64URL_SEGMENT.fullmatch(segment):
        raise ValueError("not base64url")
    stripped = segment.rstrip("=")
    if (stripped != segment and len(segment) % 4) or len(stripped) % 4 == 1:
        raise ValueError("bad base64url padding")
    tail = len(stripped) % 4   # 2 or 3 characters in the last group: 4 or 2 unused bits
    if tail and _B64URL_VALUE[stripped[-1]] & (0x0F if tail == 2 else 0x03):
        raise ValueError("not the canonical base64url encoding")
    # ASCII only: the pattern above allowed nothing else.
    return binascii.a2b_base64(stripped.encode().translate(_URLSAFE_TO_STANDARD) + b"=" * (-len(stripped) % 4))


def _hmac_claims(token: str, header: dict, secret: str) -> dict:
    """The claims of an HS* token whose signature is good (not yet checked: the claims
    themselves). Header parameters that change how a token is read (`crit`, RFC 7797's
    `b64`) are refused: no issuer of chat tokens needs them."""
    if "crit" in header or "b64" in header or not isinstance(header.get("kid", ""), str):
        raise ApiError(AUTH_INVALID, "token invalid")
    parts = token.split(".")
    if len(parts) != 3:
        raise ApiError(AUTH_INVALID, "token malformed")
    header_segment, payload_segment, signature_segment = parts
    try:
        signature = _b64url(signature_segment)
        payload = _b64url(payload_segment)
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    except (ValueError, binascii.Error):   # UnicodeEncodeError is a ValueError
        raise ApiError(AUTH_INVALID, "token malformed") from None
    expected = hmac.new(secret.encode("utf-8"), signing_input, _HMAC_DIGESTS[header["alg"]]).digest()
    if not hmac.compare_digest(signature, expected):
        raise ApiError(AUTH_INVALID, "token invalid")
    try:
        claims = orjson.loads(payload)
    except ValueError:
        raise ApiError(AUTH_INVALID, "token malformed") from None
    if not isinstance(claims, dict):
        raise ApiError(AUTH_INVALID, "token malformed")
    return claims


def _numeric_date(claims: dict, name: str) -> int:
    """A NumericDate claim (RFC 7519 §2) as PyJWT reads it: anything int() takes."""
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError):
        raise ApiError(AUTH_INVALID, f"token claim {name} is not a number") from None


def _check_claims(claims: dict, settings: Settings, now: float) -> None:
    """PyJWT's claim rules, with these options: `exp` and `sub` required, `iat`/`nbf`
    not in the future and `exp` not past (with JWT_LEEWAY_S), the audience and issuer
    checked when configured, `sub` and `jti` strings."""
    for name in ("exp", "sub"):
        if claims.get(name) is None:
            raise ApiError(AUTH_INVALID, f"token claim {name} missing")
    leeway = settings.jwt_leeway_s
    if "iat" in claims and _numeric_date(claims, "iat") > now + leeway:
        raise ApiError(AUTH_INVALID, "token not yet valid")
    if "nbf" in claims and _numeric_date(claims, "nbf") > now + leeway:
        raise ApiError(AUTH_INVALID, "token not yet valid")
    if _numeric_date(claims, "exp") <= now - leeway:
        raise ApiError(AUTH_EXPIRED, "token expired")
    if settings.jwt_issuer is not None:
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss != settings.jwt_issuer:
            raise ApiError(AUTH_INVALID, "token issuer not accepted")
    if settings.jwt_audience is not None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if (not aud or not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences)
                or settings.jwt_audience not in audiences):
            raise ApiError(AUTH_INVALID, "token audience not accepted")
    if not isinstance(claims["sub"], str) or ("jti" in claims and not isinstance(claims["jti"], str)):
        raise ApiError(AUTH_INVALID, "token invalid")


# PyJWT checks the signature only; _check_claims checks the claims for both paths.
_PYJWT_SIGNATURE_ONLY = {"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "verify_aud": False, "verify_iss": False,
                         "verify_sub": False, "verify_jti": False, "require": []}


def verify(token: object, settings: Settings, *, now: float | None = None) -> Identity:
    """Return the token's identity or raise ApiError(auth_invalid | auth_expired)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise ApiError(AUTH_INVALID, "token missing or malformed")
    header = _unverified_header(token)
    key = _key_for(header, settings)
    alg = header["alg"]
    if alg in _HMAC_DIGESTS:
        claims = _hmac_claims(token, header, key)
    else:
        try:
            claims = jwt.decode(token, key, algorithms=[alg], options=_PYJWT_SIGNATURE_ONLY)
        except jwt.PyJWTError:
            raise ApiError(AUTH_INVALID, "token invalid") from None
    _check_claims(claims, settings, time.time() if now is None else now)
    sub = claims["sub"]
    if not sub:
        raise ApiError(AUTH_INVALID, "token subject missing")
    sid = claims.get("sid")
    did = claims.get("did")
    return Identity(
        user_id=sub,
        session_id=sid if isinstance(sid, str) and sid else None,
        device_id=did if isinstance(did, str) and did else None,
        expires_at=float(claims["exp"]),
    )


def mint(settings: Settings, user_id: str, *, ttl_s: float = 3600, now: float,
         session_id: str | None = None, device_id: str | None = None,
         extra: dict | None = None) -> str:
    """Issue an HS256 token with JWT_SECRET: for dev tooling and tests only."""
    if not settings.jwt_secret:
        raise RuntimeError("JWT_SECRET is not set")
    claims = {"sub": user_id, "iat": int(now), "exp": int(now + ttl_s)}
    if session_id:
        claims["sid"] = session_id
    if device_id:
        claims["did"] = device_id
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
