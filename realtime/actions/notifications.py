"""Notifications (PROTOCOL §8): decide per recipient, record, announce, queue pushes.

Runs in workers (tasks/push.py): the edge only enqueues `conversation_activity`
after a message_send. Write first (MongoDB `notifications`), then the Kafka
outbox (`notification.created`), then the socket event or the push deliveries.

Every notification id is derived from what it is about (recipient and message,
or recipient and call), so a task that runs twice writes the same record and
queues deliveries under the same idempotency keys.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timezone
from typing import Callable, Iterable

import orjson
import pymongo.errors
import redis

from .. import connections, envelope, keys, locks, outbox, taskqueue, timeutil
from ..models import Conversation, Message, Notification, PushDevice
from ..notifications import policy, store
from .context import Actor, Context

log = logging.getLogger(__name__)

# Per-conversation lock around deciding and coalescing: the decision task and the
# flush task of one conversation never interleave. Work under it is a few queries.
NOTIFY_LOCK_TTL_S = 20
NOTIFY_LOCK_WAIT_S = 10
# A conversation first seen by the notifier: messages up to this old count as new
# (the message send that queued the task is at most this old).
FIRST_SEEN_LOOKBACK_S = 30
# A conversation quiet this long forgets its cursor (and starts from the lookback).
CURSOR_TTL_S = 7 * 24 * 3600
# Most messages one decision pass handles; the rest on the next task.
BATCH = 200
# Coalescing state lives a little longer than any window.
WINDOW_STATE_TTL_S = 3600

_NS = uuid.UUID("0b7c4f1e-5d0a-4c47-9a51-1f3f2a6c9e10")

Enqueue = Callable[..., None]


def notification_id(*parts: str) -> str:
    return uuid.uuid5(_NS, "\x1f".join(parts)).hex


def _deliver_all(enqueue: Enqueue, push_id: str, devices: Iterable[PushDevice]) -> int:
    """One task per device: a failing device never holds up the others."""
    n = 0
    for device in devices:
        enqueue(taskqueue.PUSH_DELIVER, [push_id, device.id])
        n += 1
    return n


def _record(ctx: Context, note: Notification) -> None:
    """Upsert the record (same id on a rerun), then the Kafka event."""
    note.save(validate=False)  # a replace-upsert by _id: a rerun rewrites the same record
    if note.kind == policy.KIND_CLEAR:
        return
    outbox.append(ctx.redis, _created_event(ctx, note))


def _created_event(ctx: Context, note: Notification) -> envelope.Envelope:
    return envelope.make(
        "notification.created", ctx.source,
        {"notification": note.to_wire(), "user_id": note.user_id, "delivery": note.delivery},
        user_id=note.user_id, conversation_id=note.conversation_id,
        event_id=envelope.stable_event_id("notification.created", note.id),
        occurred_at=ctx.clock())


def _in_app(ctx: Context, note: Notification) -> None:
    note.delivery = policy.ROUTE_IN_APP
    _record(ctx, note)
    ctx.emit("notification", note.to_wire(), room=keys.user_room(note.user_id))


def _window(r: redis.Redis, user_id: str, conversation_id: str) -> policy.Window:
    raw = r.get(keys.push_window(user_id, conversation_id))
    return policy.Window.from_dict(orjson.loads(raw) if raw else None)


def _save_window(r: redis.Redis, user_id: str, conversation_id: str, window: policy.Window) -> None:
    r.set(keys.push_window(user_id, conversation_id), orjson.dumps(window.to_dict()), ex=WINDOW_STATE_TTL_S)


def _push_now(ctx: Context, note: Notification, count: int, enqueue: Enqueue,
              devices: list[PushDevice] | None = None) -> int:
    """Attach the payload to the record and queue one delivery per device."""
    if devices is None:
        devices = store.devices_of(note.user_id)
    if not devices:
        return 0
    note.push = policy.payload(note.kind, note.conversation_id, count, store.badge(ctx.redis, note.user_id),
                               note.title, note.body, message_id=note.data.get("message_id"),
                               call_id=note.data.get("call_id"))
    Notification.objects(id=note.id).update_one(set__push=note.push)
    return _deliver_all(enqueue, note.id, devices)


def _message_note(message: Message, recipient: str, kind: str, now: float) -> Notification:
    return Notification(
        id=notification_id("message", recipient, message.id), user_id=recipient, kind=kind,
        conversation_id=message.conversation_id, title=message.sender_id,
        body=policy.preview(message.body),
        data={"message_id": message.id, "seq": message.seq, "sender_id": message.sender_id},
        created_at=timeutil.utc_datetime(now))


@dataclass
class Audience:
    """What one decision pass reads once for all its messages."""

    conns: dict[str, list[connections.Connection]]
    prefs: dict[str, policy.Preference]
    devices: dict[str, list[PushDevice]]  # registered devices of members with no socket


def audience(ctx: Context, conv: Conversation) -> Audience:
    members = list(conv.members or [])
    conns = connections.of_users(ctx.redis, members)
    offline = [u for u in members if not conns.get(u)]
    return Audience(conns=conns, prefs=store.preferences(members, conv.id),
                    devices=store.devices_of_users(offline))


def _epoch(dt) -> float:
    return dt.replace(tzinfo=timezone.utc).timestamp() if dt.tzinfo is None else dt.timestamp()


class Writes:
    """The writes of one decision pass, done together once it decided: one bulk insert
    of the records, one outbox round trip, then the emits and the queued tasks (still
    write, then outbox, then emit). One pass covers a burst; a write per notification
    would make the database's writers queue behind ours while a conversation is busy."""

    def __init__(self):
        self.notes: list[Notification] = []
        self.emits: list[Notification] = []
        self.tasks: list[tuple[str, list, float | None]] = []

    def commit(self, ctx: Context, enqueue: Enqueue) -> None:
        if self.notes:
            _insert_new(self.notes)
            outbox.append(ctx.redis, *[_created_event(ctx, n) for n in self.notes])
        for note in self.emits:
            ctx.emit("notification", note.to_wire(), room=keys.user_room(note.user_id))
        for name, args, countdown in self.tasks:
            enqueue(name, args, countdown=countdown)
        self.notes, self.emits, self.tasks = [], [], []


def _insert_new(notes: list[Notification]) -> None:
    """Insert the records; ones a previous run of the same pass wrote already stay."""
    try:
        Notification._get_collection().insert_many([n.to_mongo() for n in notes], ordered=False)
    except pymongo.errors.BulkWriteError as exc:
        if any(err.get("code") != 11000 for err in exc.details.get("writeErrors", [])):
            raise


def on_message(ctx: Context, conv: Conversation, message: Message,
               enqueue: Enqueue = taskqueue.send, aud: Audience | None = None,
               writes: Writes | None = None) -> dict[str, str]:
    """Decide for every other member. Call under the conversation's notify lock.

    With `writes`, what it decided is written when the caller commits them; without,
    at once. Returns {user_id: what happened} (for tests and logs).
    """
    now = ctx.clock()
    recipients = [m for m in (conv.members or []) if m != message.sender_id]
    if not recipients or message.deleted:
        return {}
    aud = aud or audience(ctx, conv)
    own_writes = writes is None
    writes = writes or Writes()
    # Coalescing runs on message time: a worker that lags behind a burst still
    # folds the burst into one window.
    sent_at = _epoch(message.created_at) if message.created_at else now
    outcome: dict[str, str] = {}
    for user_id in recipients:
        user_conns = aud.conns.get(user_id, [])
        how = policy.route(bool(user_conns), connections.in_conversation(user_conns, conv.id))
        kind = policy.kind_for(user_id, message.body)
        if how == policy.ROUTE_NONE:
            outcome[user_id] = "in_room"
            continue
        if not policy.allows(aud.prefs[user_id], kind, now):
            outcome[user_id] = "silenced"
            continue
        if how == policy.ROUTE_PUSH and not aud.devices.get(user_id):
            outcome[user_id] = "no_device"  # offline and nowhere to push: nothing to record
            continue
        note = _message_note(message, user_id, kind, now)
        note.delivery = how
        writes.notes.append(note)
        if how == policy.ROUTE_IN_APP:
            writes.emits.append(note)
            outcome[user_id] = "in_app"
            continue
        action, window = policy.coalesce(_window(ctx.redis, user_id, conv.id), note.id, sent_at,
                                         ctx.settings.push_coalesce_s)
        _save_window(ctx.redis, user_id, conv.id, window)
        if action == policy.SEND_NOW:
            note.push = policy.payload(note.kind, conv.id, 1, store.badge(ctx.redis, user_id), note.title, note.body,
                                       message_id=message.id)
            writes.tasks.extend((taskqueue.PUSH_DELIVER, [note.id, d.id], None) for d in aud.devices[user_id])
            outcome[user_id] = "push"
        else:
            if action == policy.DEFER_SCHEDULE:
                writes.tasks.append((taskqueue.PUSH_FLUSH, [user_id, conv.id], max(0.0, window.until - now)))
            outcome[user_id] = "push_deferred"
    if own_writes:
        writes.commit(ctx, enqueue)
    return outcome


def _conversation_lock(ctx: Context, conversation_id: str):
    """Wait (briefly) for the conversation's notify lock; TimeoutError if it stays busy."""
    return locks.waiting(ctx.redis, keys.notify_lock(conversation_id), NOTIFY_LOCK_TTL_S, NOTIFY_LOCK_WAIT_S,
                         busy=lambda: TimeoutError(f"notify lock of {conversation_id} busy"), sleep_s=0.1)


def conversation_activity(ctx: Context, conversation_id: str, sent_at: float | None = None,
                          enqueue: Enqueue = taskqueue.send) -> int:
    """Notify about every message of the conversation not decided yet.

    A per-conversation cursor (highest seq decided) makes this idempotent and lets
    one run cover a burst: later tasks of the burst find nothing left to do.
    """
    # From here on a new message_send queues a new task (see edge/handlers/push.py).
    ctx.redis.delete(keys.notify_queued(conversation_id))
    with _conversation_lock(ctx, conversation_id):
        return _decide_undecided(ctx, conversation_id, sent_at, enqueue)


def _decide_undecided(ctx: Context, conversation_id: str, sent_at: float | None, enqueue: Enqueue) -> int:
    """Decide the messages past the conversation's cursor. Call under its notify lock."""
    conv = Conversation.objects(id=conversation_id).only("kind", "members", "last_seq").first()
    if conv is None:
        return 0
    if len(conv.members or []) < 2:
        return 0  # nobody to tell about anything
    cursor = ctx.redis.get(keys.notify_cursor(conversation_id))
    query = Message.objects(conversation_id=conversation_id)
    if cursor is not None:
        query = query(seq__gt=int(cursor))
    else:
        since = (sent_at or ctx.clock()) - FIRST_SEEN_LOOKBACK_S
        query = query(created_at__gte=timeutil.utc_datetime(since))
    done, last = 0, None
    aud, writes = None, Writes()
    for message in query.order_by("seq").limit(BATCH):
        aud = aud or audience(ctx, conv)
        on_message(ctx, conv, message, enqueue, aud, writes)
        last = message.seq
        done += 1
    writes.commit(ctx, enqueue)
    if last is not None:
        ctx.redis.set(keys.notify_cursor(conversation_id), last, ex=CURSOR_TTL_S)
    if done == BATCH:
        enqueue(taskqueue.PUSH_CONVERSATION_ACTIVITY, [conversation_id, None])
    return done


def flush(ctx: Context, user_id: str, conversation_id: str, enqueue: Enqueue = taskqueue.send) -> int:
    """The coalescing window of (user, conversation) ended: push what it gathered."""
    with locks.held(ctx.redis, keys.notify_lock(conversation_id), NOTIFY_LOCK_TTL_S) as mine:
        if not mine:
            # The decision task holds it for a moment: try again shortly.
            enqueue(taskqueue.PUSH_FLUSH, [user_id, conversation_id], countdown=0.1)
            return 0
        now = ctx.clock()
        window = _window(ctx.redis, user_id, conversation_id)
        due, _ = policy.flush(window, now, ctx.settings.push_coalesce_s)
        if due is not None:
            # Messages of the burst that are stored but not decided yet (their decision
            # task waits behind other work on a busy worker) belong in this push: decided
            # after it, they would open a window of their own and push again, a second
            # push for one burst. Deciding them here folds them in (the window is
            # pending, so they are deferred into it); their own task finds nothing left.
            if _decide_undecided(ctx, conversation_id, None, enqueue):
                window = _window(ctx.redis, user_id, conversation_id)
            due, window_after = policy.flush(window, now, ctx.settings.push_coalesce_s)
        if due is None:
            if window.pending:
                enqueue(taskqueue.PUSH_FLUSH, [user_id, conversation_id],
                        countdown=max(0.05, window.until - now))
            return 0
        _save_window(ctx.redis, user_id, conversation_id, window_after)
    latest, count = due
    note = Notification.objects(id=latest).first()
    if note is None:
        return 0
    return _push_now(ctx, note, count, enqueue)


def call_missed(ctx: Context, call_id: str, conversation_id: str, caller_id: str,
                user_ids: list[str], enqueue: Enqueue = taskqueue.send) -> dict[str, str]:
    """Entry point for calls: `user_ids` missed `call_id` from `caller_id`.

    Connected users get an in-app `notification`, the others a push to every device
    (never coalesced: each missed call is news). Settings apply as for messages.
    """
    now = ctx.clock()
    recipients = [u for u in user_ids if u != caller_id]
    conns = connections.of_users(ctx.redis, recipients)
    prefs = store.preferences(recipients, conversation_id)
    outcome = {}
    for user_id in recipients:
        if not policy.allows(prefs[user_id], policy.KIND_CALL_MISSED, now):
            outcome[user_id] = "silenced"
            continue
        note = Notification(
            id=notification_id("call_missed", user_id, call_id), user_id=user_id,
            kind=policy.KIND_CALL_MISSED, conversation_id=conversation_id, title=caller_id,
            body="Missed call", data={"call_id": call_id, "caller_id": caller_id},
            created_at=timeutil.utc_datetime(now))
        if conns.get(user_id):
            _in_app(ctx, note)
            outcome[user_id] = "in_app"
        else:
            note.delivery = policy.ROUTE_PUSH
            _record(ctx, note)
            _push_now(ctx, note, 1, enqueue)
            outcome[user_id] = "push"
    return outcome


def clear(ctx: Context, user_id: str, conversation_id: str, reading_device_id: str | None,
          enqueue: Enqueue = taskqueue.send) -> int:
    """The user read the conversation on one device: a silent clear to the others.

    Also drops what the coalescing window gathered, so no push about messages the
    user has just read goes out after this.
    """
    with _conversation_lock(ctx, conversation_id):
        window = _window(ctx.redis, user_id, conversation_id)
        if window.pending:
            _save_window(ctx.redis, user_id, conversation_id, policy.clear_pending(window))
    devices = [d for d in store.devices_of(user_id) if d.device_id != reading_device_id]
    if not devices:
        return 0
    now = ctx.clock()
    note = Notification(
        id=notification_id("clear", user_id, conversation_id, uuid.uuid4().hex), user_id=user_id,
        kind=policy.KIND_CLEAR, conversation_id=conversation_id, title="", body="",
        data={"reading_device_id": reading_device_id}, delivery=policy.ROUTE_PUSH,
        created_at=timeutil.utc_datetime(now),
        push=policy.payload(policy.KIND_CLEAR, conversation_id, 0, store.badge(ctx.redis, user_id), "", ""))
    _record(ctx, note)
    return _deliver_all(enqueue, note.id, devices)


# --- Socket-driven changes: devices and settings -------------------------------------------

def register_device(ctx: Context, user_id: str, device_id: str, platform: str, token: str | None,
                    subscription: dict | None) -> dict:
    device = store.register_device(user_id, device_id, platform, token, subscription, ctx.clock())
    return {"device_id": device.device_id, "platform": device.platform}


def unregister_device(ctx: Context, user_id: str, device_id: str) -> bool:
    return store.unregister_device(user_id, device_id)


def set_preference(ctx: Context, user_id: str, conversation_id: str | None, level: str | None,
                   muted_until: float | None, clear_mute: bool) -> dict:
    pref = store.save_setting(user_id, conversation_id, level, muted_until, clear_mute, ctx.clock())
    return {"conversation_id": conversation_id, "level": pref.level,
            "muted_until": timeutil.iso(pref.muted_until)}


# --- Reads clear the user's other devices ----------------------------------------------------

def after_read(ctx: Context, actor: Actor, conversation_id: str, enqueue: Enqueue = taskqueue.send) -> bool:
    """A `message_read`: ask for a silent clear on the reader's other devices, at most
    once per PUSH_COALESCE_S per conversation (a burst of reads is one clear)."""
    window_ms = max(100, int(ctx.settings.push_coalesce_s * 1000))
    if not ctx.redis.set(keys.push_clear_debounce(actor.user_id, conversation_id), 1, nx=True, px=window_ms):
        return False
    enqueue(taskqueue.PUSH_CLEAR, [actor.user_id, conversation_id, actor.device_id])
    return True
