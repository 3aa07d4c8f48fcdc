"""MongoDB documents (PROTOCOL §4, §7, §11).

Documents other services read or write keep the contract's field names. `strict`
is off so that documents written by other services with extra fields load.
"""
from __future__ import annotations

from mongoengine import (
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    ListField,
    StringField,
)

from . import timeutil


class Conversation(Document):
    """Owned by the message service; we read membership and keep `last_seq`."""

    id = StringField(primary_key=True)
    kind = StringField(choices=("direct", "group"), default="group")
    members = ListField(StringField())
    created_at = DateTimeField()
    # Highest seq stored. Advanced with $max after each insert, so it never moves
    # back; documents written without it count as 0.
    last_seq = IntField(default=0)
    meta = {"collection": "conversations", "strict": False, "indexes": ["members"]}


class Message(Document):
    id = StringField(primary_key=True)
    conversation_id = StringField(required=True)
    seq = IntField(required=True)
    sender_id = StringField(required=True)
    body = StringField(null=True)
    reply_to = StringField(null=True)
    client_msg_id = StringField(null=True)
    created_at = DateTimeField(required=True)
    edited_at = DateTimeField(null=True)
    deleted = BooleanField(default=False)
    meta = {
        "collection": "messages",
        "strict": False,
        # The unique (conversation_id, seq) index is what makes seq gapless and
        # duplicate-free without transactions (see realtime.actions.messages).
        "indexes": [{"fields": ["conversation_id", "seq"], "unique": True}],
    }

    def to_document(self) -> dict:
        """The stored document, as `to_mongo()` makes it, built directly: a send inserts
        it with pymongo, which takes ~120 µs less CPU per insert than `save()` (under
        eventlet here: ~280 against ~400 µs)."""
        return {
            "_id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "body": self.body,
            "reply_to": self.reply_to,
            "client_msg_id": self.client_msg_id,
            "created_at": self.created_at,
            "edited_at": self.edited_at,
            "deleted": self.deleted,
        }

    def to_wire(self) -> dict:
        if self.deleted:
            return {
                "id": self.id,
                "conversation_id": self.conversation_id,
                "seq": self.seq,
                "sender_id": self.sender_id,
                "deleted": True,
                "body": None,
            }
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "body": self.body,
            "reply_to": self.reply_to,
            "created_at": timeutil.iso(self.created_at),
            "edited_at": timeutil.iso(self.edited_at),
            "client_msg_id": self.client_msg_id,
        }


class ReadState(Document):
    """One user's read watermarks in one conversation (PROTOCOL §7, §11).

    `_id` is the (conversation, user) pair key (realtime.keys.pair): FerretDB 1.24
    on SQLite answers queries by `_id` from its primary key but scans the whole
    collection for any other filter, so every hot read and write goes by `_id`.
    """

    id = StringField(primary_key=True)
    conversation_id = StringField(required=True)
    user_id = StringField(required=True)
    seq = IntField(default=0)          # public watermark (receipts_get)
    private_seq = IntField(default=0)  # includes private reads and own sends; drives unread
    read_at = DateTimeField()
    meta = {
        "collection": "read_states",
        "strict": False,
        "indexes": [
            {"fields": ["conversation_id", "user_id"], "unique": True},
            "user_id",
        ],
    }


class CallParticipant(EmbeddedDocument):
    user_id = StringField(required=True)
    device_id = StringField(required=True)


class Call(Document):
    """The record of one call (PROTOCOL §10); `_id` is the call id on the wire.

    Written whole from the Redis state on each transition (realtime.actions.calls),
    so a repeated write is harmless. The hot path reads Redis, never this.
    """

    id = StringField(primary_key=True)
    conversation_id = StringField(required=True)
    group = BooleanField(default=False)
    media = StringField(choices=("audio", "video"))
    caller_id = StringField(required=True)
    caller_device_id = StringField()
    callee_ids = ListField(StringField())
    busy_ids = ListField(StringField())
    participants = ListField(EmbeddedDocumentField(CallParticipant))  # every device that joined
    status = StringField()
    created_at = DateTimeField(required=True)
    answered_at = DateTimeField(null=True)
    ended_at = DateTimeField(null=True)
    end_reason = StringField(null=True)
    ended_by = StringField(null=True)
    duration_s = IntField(default=0)
    meta = {"collection": "calls", "strict": False, "indexes": ["conversation_id"]}


# --- Notifications (PROTOCOL §8) ------------------------------------------------------

class PushDevice(Document):
    """A device registered for push; `_id` is "<user_id>:<device_id>"."""

    id = StringField(primary_key=True)
    user_id = StringField(required=True)
    device_id = StringField(required=True)
    platform = StringField(required=True, choices=("webpush", "fcm", "apns"))
    token = StringField(null=True)            # FCM / APNs device token
    subscription = DictField(null=True)        # Web Push {endpoint, keys: {p256dh, auth}}
    created_at = DateTimeField()
    updated_at = DateTimeField()
    meta = {"collection": "push_devices", "strict": False, "indexes": ["user_id"]}

    @staticmethod
    def key(user_id: str, device_id: str) -> str:
        return f"{len(user_id)}:{user_id}:{device_id}"


class NotificationSetting(Document):
    """A user's default (conversation_id None) or per-conversation setting."""

    id = StringField(primary_key=True)
    user_id = StringField(required=True)
    conversation_id = StringField(null=True)
    level = StringField(choices=("all", "mentions", "none"), default="all")
    muted_until = DateTimeField(null=True)
    updated_at = DateTimeField()
    meta = {"collection": "notification_settings", "strict": False, "indexes": ["user_id"]}

    @staticmethod
    def key(user_id: str, conversation_id: str | None) -> str:
        return f"{len(user_id)}:{user_id}:{conversation_id or '*'}"


class Notification(Document):
    """One notification of one user; `_id` is the id on the wire.

    `delivery` says how it reached the user (in_app or push). `push` holds the push
    payload when one was sent for it (a coalesced push is stored on the newest
    notification it covers); clears are stored with kind "clear" and never emitted.
    """

    id = StringField(primary_key=True)
    user_id = StringField(required=True)
    kind = StringField(required=True)  # message | mention | call_missed | clear
    conversation_id = StringField(null=True)
    title = StringField(default="")
    body = StringField(default="")
    data = DictField()
    delivery = StringField(default="in_app")
    push = DictField(null=True)
    created_at = DateTimeField(required=True)
    meta = {"collection": "notifications", "strict": False, "indexes": ["user_id"]}

    def to_wire(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "conversation_id": self.conversation_id,
            "title": self.title,
            "body": self.body,
            "created_at": timeutil.iso(self.created_at),
            "data": dict(self.data or {}),
        }
