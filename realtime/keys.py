"""Every Redis key and channel the layer uses, in one place.

Socket.IO room names are internal (clients never name rooms, PROTOCOL §2) and are
built here too so that edge and workers address the same rooms.
"""
from __future__ import annotations

# --- Socket.IO rooms --------------------------------------------------------
def user_room(user_id: str) -> str:
    return f"user:{user_id}"


def conversation_room(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


# --- Auth ---------------------------------------------------------------------
# Written by the auth service (PROTOCOL §2); we only read / subscribe.
REVOCATION_CHANNEL = "auth:revocations"


def revoked_session(session_id: str) -> str:
    return f"auth:revoked:{session_id}"


# --- Kafka outbox (durable buffer between the edge and Kafka) ------------------
OUTBOX_STREAM = "rt:outbox"
OUTBOX_GROUP = "kafka-relay"
OUTBOX_RELAY_LOCK = "rt:lock:outbox-relay"


# --- Kafka fan-out of chat.messages ---------------------------------------------
def fanout_done(event_id: str) -> str:
    """Set once an externally produced event has been fanned out (dedupe)."""
    return f"rt:fanout:done:{event_id}"


# --- Edge nodes --------------------------------------------------------------------
NODES_HEARTBEAT = "rt:nodes:heartbeat"  # zset node_id -> last heartbeat (epoch s)


def sweep_lock(name: str) -> str:
    return f"rt:lock:sweep:{name}"


# --- Notifications and push (PROTOCOL §8) ------------------------------------------
# Task queue of push work (routed in beat_schedule.TASK_ROUTES).
PUSH_QUEUE = "push"


def notify_cursor(conversation_id: str) -> str:
    """Highest seq of the conversation whose notifications were decided."""
    return f"rt:notify:cursor:{conversation_id}"


def notify_queued(conversation_id: str) -> str:
    """Set while a decision task for the conversation is queued and not started:
    a burst of sends queues one task, not one per message."""
    return f"rt:notify:queued:{conversation_id}"


def notify_lock(conversation_id: str) -> str:
    return f"rt:lock:notify:{conversation_id}"


def push_window(user_id: str, conversation_id: str) -> str:
    """Exists while a push for (user, conversation) went out less than PUSH_COALESCE_S ago."""
    return f"rt:push:window:{user_id}:{conversation_id}"


def push_pending(user_id: str, conversation_id: str) -> str:
    """Hash of what arrived during the window: count and the newest notification."""
    return f"rt:push:pending:{user_id}:{conversation_id}"


def push_delivery(idempotency_key: str) -> str:
    """State of one (push, device) delivery: 'inflight' (a lease) or 'sent'."""
    return f"rt:push:delivery:{idempotency_key}"


def fcm_access_token(project_id: str) -> str:
    return f"rt:push:fcm-token:{project_id}"
