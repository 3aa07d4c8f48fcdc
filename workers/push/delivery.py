"""One push to one device, exactly once as far as this side can tell.

The idempotency key is (push id, device). Before sending, a lease marks the
delivery in flight; after the provider accepted it, the key is marked sent. A
redelivered task (acks_late, the worker died) finds it sent and sends nothing; one
that finds a live lease waits for it. Only a worker killed between the provider's
answer and the mark, and whose lease then expires, could resend: the provider's
collapse key (Web Push Topic, FCM collapse_key, apns-collapse-id) folds that copy
into the first on the device.
"""
from __future__ import annotations

import collections
import logging
from typing import Callable

from realtime import keys
from realtime.actions.context import Context
from realtime.models import Notification, PushDevice
from realtime.notifications import store

from . import apns, common, fcm, webpush

log = logging.getLogger(__name__)

# Longer than one send can take (connect + read timeouts, token exchange).
LEASE_S = 60
SENT_TTL_S = 7 * 24 * 3600

DELIVERED = "delivered"
DUPLICATE = "duplicate"
REMOVED = "removed"         # provider said gone: device deleted
DROPPED = "dropped"         # permanent failure, or nothing to send
NO_DEVICE = "no_device"


class RetryLater(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def idempotency_key(push_id: str, device_key: str) -> str:
    return f"{push_id}|{device_key}"


def send_to(ctx: Context, device: PushDevice, payload: dict, key: str) -> common.Outcome:
    collapse = payload.get("conversation_id")
    if device.platform == "webpush":
        return webpush.send(ctx.settings, device.subscription or {}, payload)
    if device.platform == "fcm":
        return fcm.send(ctx.settings, device.token, payload, collapse_key=collapse)
    if device.platform == "apns":
        return apns.send(ctx.settings, device.token, payload, key, collapse_id=collapse)
    return common.Outcome(common.FAILED, None, f"unknown platform {device.platform!r}")


# Push payloads never change once deliveries are queued (they are written before),
# so a worker keeps recent ones: a user's devices share one read.
_payloads: "collections.OrderedDict[str, dict]" = collections.OrderedDict()
PAYLOAD_CACHE_SIZE = 1024


def _payload(push_id: str) -> dict | None:
    cached = _payloads.get(push_id)
    if cached is not None:
        return cached
    note = Notification.objects(id=push_id).only("push").first()
    if note is None or not note.push:
        return None
    _payloads[push_id] = dict(note.push)
    if len(_payloads) > PAYLOAD_CACHE_SIZE:
        _payloads.popitem(last=False)
    return _payloads[push_id]


def deliver(ctx: Context, push_id: str, device_key: str,
            after_send: Callable[[], None] | None = None) -> str:
    """Send push `push_id` to device `device_key`. Raises RetryLater on transient failure.

    `after_send` is a test hook run after the delivery was marked sent, to simulate a
    worker killed before the task was acknowledged.
    """
    r = ctx.redis
    key = idempotency_key(push_id, device_key)
    state_key = keys.push_delivery(key)
    if not r.set(state_key, "inflight", nx=True, ex=LEASE_S):
        state = r.get(state_key)
        if state == "inflight":
            raise RetryLater("delivery in flight elsewhere", r.ttl(state_key))
        return DUPLICATE  # sent, removed or dropped already: nothing to do twice
    try:
        device = store.device(device_key)
        if device is None:
            r.set(state_key, NO_DEVICE, ex=SENT_TTL_S)
            return NO_DEVICE
        payload = _payload(push_id)
        if payload is None:
            r.set(state_key, DROPPED, ex=SENT_TTL_S)
            return DROPPED
        outcome = send_to(ctx, device, payload, key)
    except BaseException:
        r.delete(state_key)  # nothing went out: let the retry send
        raise
    if outcome.status == common.SENT:
        r.set(state_key, DELIVERED, ex=SENT_TTL_S)
        if after_send is not None:
            after_send()
        return DELIVERED
    if outcome.status == common.GONE:
        store.remove_gone_device(device_key, device.token,
                                 (device.subscription or {}).get("endpoint") if device.platform == "webpush" else None)
        r.set(state_key, REMOVED, ex=SENT_TTL_S)
        log.info("push %s: %s token gone (%s %s); device %s removed", push_id, device.platform,
                 outcome.http_status, outcome.reason, device_key)
        return REMOVED
    if outcome.status == common.RETRY:
        r.delete(state_key)
        raise RetryLater(f"{device.platform} {outcome.http_status} {outcome.reason}", outcome.retry_after)
    r.set(state_key, DROPPED, ex=SENT_TTL_S)
    log.warning("push %s to %s dropped: %s %s", push_id, device_key, outcome.http_status, outcome.reason)
    return DROPPED
