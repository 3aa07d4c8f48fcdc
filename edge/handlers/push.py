"""Notification events (PROTOCOL §8): push device registration, the VAPID key,
notification settings; and, after each message_send, the task that decides who
gets notified (run by workers, so the ack never waits on it)."""
from __future__ import annotations

import base64
import binascii
import logging
from urllib.parse import urlsplit

from realtime import keys, taskqueue, timeutil, validation
from realtime.actions import conversations, notifications
from realtime.errors import invalid
from realtime.notifications import policy

from ..dispatch import EventSpec

log = logging.getLogger(__name__)

PLATFORMS = ("webpush", "fcm", "apns")
# A queued decision task that never started (lost) stops holding back new ones after this.
NOTIFY_QUEUED_TTL_S = 30
MAX_TOKEN_LEN = 4096
MAX_ENDPOINT_LEN = 2048


def _b64url_len(text, name: str, expected: int) -> str:
    if not isinstance(text, str) or not text:
        raise invalid(f"subscription.keys.{name} is required")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise invalid(f"subscription.keys.{name} must be base64url") from None
    if len(raw) != expected:
        raise invalid(f"subscription.keys.{name} must be {expected} bytes")
    return text


def _subscription(node, data: dict) -> dict:
    sub = data.get("subscription")
    if not isinstance(sub, dict):
        raise invalid("subscription {endpoint, keys: {p256dh, auth}} is required for webpush")
    endpoint = sub.get("endpoint")
    if not isinstance(endpoint, str) or len(endpoint) > MAX_ENDPOINT_LEN:
        raise invalid("subscription.endpoint must be a URL")
    parts = urlsplit(endpoint)
    # Workers POST to this URL: plain http only in dev mode (local test push
    # services), so a client cannot aim the workers at arbitrary cleartext services.
    schemes = ("https", "http") if node.settings.dev_mode else ("https",)
    if parts.scheme not in schemes or not parts.netloc:
        raise invalid("subscription.endpoint must be an https URL")
    keys = sub.get("keys")
    if not isinstance(keys, dict):
        raise invalid("subscription.keys is required")
    p256dh = _b64url_len(keys.get("p256dh"), "p256dh", 65)
    auth = _b64url_len(keys.get("auth"), "auth", 16)
    return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}


def push_register(node, session, data: dict) -> dict:
    platform = validation.string(data, "platform")
    if platform not in PLATFORMS:
        raise invalid(f"platform must be one of {', '.join(PLATFORMS)}")
    device_id = validation.identifier(data, "device_id", required=False) or session.device_id
    token = subscription = None
    if platform == "webpush":
        subscription = _subscription(node, data)
    else:
        token = validation.string(data, "token")
        if not token or len(token) > MAX_TOKEN_LEN or any(c.isspace() or c == "/" for c in token):
            raise invalid("token must be a non-empty device token")
    return notifications.register_device(node.ctx, session.user_id, device_id, platform, token, subscription)


def push_unregister(node, session, data: dict) -> dict:
    device_id = validation.identifier(data, "device_id", required=False) or session.device_id
    notifications.unregister_device(node.ctx, session.user_id, device_id)
    return {}


def push_config(node, session, data: dict) -> dict:
    return {"vapid_public_key": node.settings.webpush_vapid_public_key}


def notification_settings(node, session, data: dict) -> dict:
    conversation_id = validation.identifier(data, "conversation_id", required=False)
    level = data.get("level")
    if level is not None and level not in policy.LEVELS:
        raise invalid(f"level must be one of {', '.join(policy.LEVELS)}")
    clear_mute = "muted_until" in data and data["muted_until"] is None
    muted_until = None
    if data.get("muted_until") is not None:
        raw = data["muted_until"]
        if not isinstance(raw, str):
            raise invalid("muted_until must be an ISO 8601 time or null")
        try:
            muted_until = timeutil.from_iso(raw)
        except ValueError:
            raise invalid("muted_until must be an ISO 8601 time or null") from None
    if level is None and muted_until is None and not clear_mute:
        raise invalid("level or muted_until is required")
    if conversation_id is not None:
        conversations.check_member(conversation_id, session.user_id)
    settings = notifications.set_preference(node.ctx, session.user_id, conversation_id, level,
                                            muted_until, clear_mute)
    return {"settings": settings}


def _after_send(node, session, message: dict) -> None:
    """Queue the notification decision unless one is queued and not started yet (it
    will see this message: the message is stored before this runs). The message is
    acknowledged whatever happens here; a failed enqueue is logged, and the next
    send's task catches up through the conversation's cursor."""
    conversation_id = message["conversation_id"]
    queued = keys.notify_queued(conversation_id)
    try:
        if not node.redis.set(queued, 1, nx=True, ex=NOTIFY_QUEUED_TTL_S):
            return
        taskqueue.send(taskqueue.PUSH_CONVERSATION_ACTIVITY, [conversation_id, node.clock()])
    except Exception as exc:  # broker down: the message itself was acknowledged
        log.warning("could not queue notifications for %s: %s", conversation_id, exc)
        try:
            node.redis.delete(queued)
        except Exception:
            pass


def setup(node) -> None:
    node.after_send_hooks.append(_after_send)


EVENTS = [
    EventSpec("push_register", push_register),
    EventSpec("push_unregister", push_unregister),
    EventSpec("push_config", push_config),
    EventSpec("notification_settings", notification_settings),
]
