"""JWT verification with pinned algorithms (PROTOCOL §2).

The verifier never trusts the token's header to pick how to verify: the header's
`alg` must be in the configured list, HS* tokens are checked with JWT_SECRET only
and RS*/ES*/PS* tokens with a configured public key only (selected by `kid`), so
neither `alg: none` nor algorithm confusion (an HMAC keyed with a public key) can
pass.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import jwt
import orjson

from .errors import AUTH_EXPIRED, AUTH_INVALID, ApiError
from .settings import Settings


@dataclass(frozen=True)
class Identity:
    user_id: str
    session_id: str | None
    device_id: str | None
    expires_at: float


def _unverified_header(token: str) -> dict:
    """The token's header, read only to choose the key and algorithm to verify with
    (jwt.decode reads and checks it again). PyJWT's get_unverified_header decodes the
    whole token, signature included, before jwt.decode does it all again: over a third
    of the time verification took in a connect storm (py-spy, bench W1)."""
    segment, dot, _ = token.partition(".")
    try:
        if not dot:
            raise ValueError("no payload")
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
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


def verify(token: object, settings: Settings) -> Identity:
    """Return the token's identity or raise ApiError(auth_invalid | auth_expired)."""
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise ApiError(AUTH_INVALID, "token missing or malformed")
    header = _unverified_header(token)
    key = _key_for(header, settings)
    options = {"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None,
               "verify_iss": settings.jwt_issuer is not None}
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[header["alg"]],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(AUTH_EXPIRED, "token expired") from None
    except jwt.InvalidAudienceError:
        raise ApiError(AUTH_INVALID, "token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise ApiError(AUTH_INVALID, "token issuer not accepted") from None
    except jwt.PyJWTError:
        raise ApiError(AUTH_INVALID, "token invalid") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
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
