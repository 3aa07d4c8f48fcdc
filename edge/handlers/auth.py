"""`authenticate {token}`: first authentication or token refresh (PROTOCOL §2)."""
from __future__ import annotations

from ..dispatch import EventSpec


def authenticate(node, session, data: dict) -> dict:
    return node.authenticate(session, data.get("token"), data.get("device_id"))


EVENTS = [EventSpec("authenticate", authenticate, requires_auth=False)]
