"""`ice_servers` for call_initiate / call_answer (PROTOCOL §10).

TURN credentials follow coturn's REST scheme (`use-auth-secret`): the username is
`<expiry epoch s>:<user_id>` and the credential is base64(HMAC-SHA1(TURN_SECRET,
username)), so coturn checks them without a call to us and they expire by themselves.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from ..settings import Settings


def turn_credentials(secret: str, user_id: str, now: float, ttl_s: int) -> tuple[str, str]:
    username = f"{int(now) + int(ttl_s)}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(settings: Settings, user_id: str, now: float) -> list[dict]:
    servers: list[dict] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_secret and settings.turn_urls:
        username, credential = turn_credentials(settings.turn_secret, user_id, now, settings.turn_ttl_s)
        servers.append({"urls": list(settings.turn_urls), "username": username, "credential": credential})
    return servers
