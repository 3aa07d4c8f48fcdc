"""MongoDB reads and writes of the notification feature: devices, settings, unread."""
from __future__ import annotations

from datetime import datetime, timezone

import redis

from .. import timeutil
from ..actions.conversations import current_last_seqs
from ..db import DB_DOWN_ERRORS, unavailable
from ..models import Conversation, NotificationSetting, PushDevice, ReadState
from . import policy


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


# --- devices ---------------------------------------------------------------------------

def register_device(user_id: str, device_id: str, platform: str, token: str | None,
                    subscription: dict | None, now: float) -> PushDevice:
    key = PushDevice.key(user_id, device_id)
    at = timeutil.utc_datetime(now)
    try:
        # A token or endpoint belongs to one registration: a device that changed
        # hands (another user logged in) must not keep getting the first user's pushes.
        if token:
            PushDevice.objects(token=token, id__ne=key).delete()
        if subscription:
            PushDevice.objects(subscription__endpoint=subscription["endpoint"], id__ne=key).delete()
        PushDevice.objects(id=key).update_one(
            upsert=True, set__user_id=user_id, set__device_id=device_id, set__platform=platform,
            set__token=token, set__subscription=subscription, set__updated_at=at,
            set_on_insert__created_at=at)
        return PushDevice.objects(id=key).first()
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc


def unregister_device(user_id: str, device_id: str) -> bool:
    try:
        return bool(PushDevice.objects(id=PushDevice.key(user_id, device_id)).delete())
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc


def devices_of(user_id: str) -> list[PushDevice]:
    return list(PushDevice.objects(user_id=user_id))


def devices_of_users(user_ids: list[str]) -> dict[str, list[PushDevice]]:
    if not user_ids:
        return {}
    out: dict[str, list[PushDevice]] = {}
    for dev in PushDevice.objects(user_id__in=user_ids):
        out.setdefault(dev.user_id, []).append(dev)
    return out


def device(key: str) -> PushDevice | None:
    return PushDevice.objects(id=key).first()


def remove_gone_device(key: str, token: str | None, endpoint: str | None) -> None:
    """The provider said the token is gone: drop it, unless re-registered meanwhile."""
    query = {"id": key}
    if token is not None:
        query["token"] = token
    if endpoint is not None:
        query["subscription__endpoint"] = endpoint
    PushDevice.objects(**query).delete()


# --- settings --------------------------------------------------------------------------

def save_setting(user_id: str, conversation_id: str | None, level: str | None,
                 muted_until: float | None, clear_mute: bool, now: float) -> policy.Preference:
    key = NotificationSetting.key(user_id, conversation_id)
    update = {"set__user_id": user_id, "set__conversation_id": conversation_id,
              "set__updated_at": timeutil.utc_datetime(now)}
    if level is not None:
        update["set__level"] = level
    else:
        update["set_on_insert__level"] = "all"
    if muted_until is not None:
        update["set__muted_until"] = timeutil.utc_datetime(muted_until)
    elif clear_mute:
        update["set__muted_until"] = None
    try:
        NotificationSetting.objects(id=key).update_one(upsert=True, **update)
        doc = NotificationSetting.objects(id=key).first()
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    return policy.Preference(level=doc.level or "all", muted_until=_epoch(doc.muted_until))


def preferences(user_ids: list[str], conversation_id: str | None) -> dict[str, policy.Preference]:
    """The effective preference of each user for a conversation (or their default)."""
    keys = [NotificationSetting.key(u, None) for u in user_ids]
    if conversation_id:
        keys += [NotificationSetting.key(u, conversation_id) for u in user_ids]
    found = {doc.id: policy.Preference(level=doc.level or "all", muted_until=_epoch(doc.muted_until))
             for doc in NotificationSetting.objects(id__in=keys)}
    return {u: policy.effective(found.get(NotificationSetting.key(u, None)),
                                found.get(NotificationSetting.key(u, conversation_id))
                                if conversation_id else None)
            for u in user_ids}


# --- unread ----------------------------------------------------------------------------

def badge(r: redis.Redis, user_id: str) -> int:
    """Total unread of the user: each conversation's last seq minus their watermark.

    The last seq is `last_seq` or the newer seq hint (the sweep writes `last_seq` a
    moment after the send); the watermark is `read_states` (owned by read receipts);
    the private watermark counts too when present; no read state means nothing read yet.
    """
    stored = {c.id: c.last_seq or 0 for c in Conversation.objects(members=user_id).only("last_seq")}
    last_seqs = current_last_seqs(r, stored)
    read = {}
    for rs in ReadState.objects(user_id=user_id).only("conversation_id", "seq", "private_seq"):
        read[rs.conversation_id] = max(rs.seq or 0, getattr(rs, "private_seq", 0) or 0)
    return policy.unread_total(last_seqs, read)
