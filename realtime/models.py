"""MongoDB documents (PROTOCOL §4, §7, §11).

Documents other services read or write keep the contract's field names. `strict`
is off so that documents written by other services with extra fields load.
"""
from __future__ import annotations

from mongoengine import (
    BooleanField,
    DateTimeField,
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


class MessageClaim(Document):
    """Reserves (sender, client_msg_id) -> message id before the message is written.

    FerretDB has no partial indexes, so the idempotency key lives in its own
    collection keyed by `_id` rather than as a sparse unique index on messages.
    A claim whose message was never written (the writer died) is completed by
    the next retry with the same reserved id.
    """

    id = StringField(primary_key=True)
    message_id = StringField(required=True)
    conversation_id = StringField(required=True)
    created_at = DateTimeField(required=True)
    meta = {"collection": "message_claims", "strict": False}

    @staticmethod
    def key(sender_id: str, client_msg_id: str) -> str:
        # Length-prefixed so that no (sender, id) pair can collide with another.
        return f"{len(sender_id)}:{sender_id}:{client_msg_id}"


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
