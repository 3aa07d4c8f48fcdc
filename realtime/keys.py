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


# --- Calls (PROTOCOL §10) ----------------------------------------------------------
def call_state(call_id: str) -> str:
    """JSON of the call's state machine (realtime.calls.machine.CallState)."""
    return f"rt:call:{call_id}"


def call_of_conversation(conversation_id: str) -> str:
    """The conversation's current call id: one call per conversation at a time (glare)."""
    return f"rt:call:conv:{conversation_id}"


def call_of_user(user_id: str) -> str:
    """The call a user is in (caller or answered participant): others get `busy`."""
    return f"rt:call:user:{user_id}"


def call_lock(conversation_id: str) -> str:
    """Serialises every transition of the conversation's calls across nodes and workers."""
    return f"rt:lock:call:{conversation_id}"


# zset "<kind>|<call_id>|<user_id>|<device_id>" -> when to re-check (epoch s)
CALL_DEADLINES = "rt:call:deadlines"


# --- Presence (PROTOCOL §5) ---------------------------------------------------------
def presence(user_id: str) -> str:
    """hash: chosen, message, offline_since, last_seen, announced (JSON), announced_at"""
    return f"rt:presence:{user_id}"


# zset user_id -> when to look at the user's presence again (epoch s); a user
# being settled carries a lease score in the future (realtime.presence.store).
PRESENCE_DUE = "rt:presence:due"
# pub/sub channel: one message per batch of announcements, a JSON list of
# user_presence payloads; every edge node delivers them to its local subscribers.
PRESENCE_ANNOUNCE_CHANNEL = "rt:presence:announce"


def presence_room(user_id: str) -> str:
    """Socket.IO room of the sockets subscribed to a user's presence."""
    return f"presence:{user_id}"


def presence_node_settled(node_id: str) -> str:
    """Set when a sweep settled a node as dead; a node that finds it set was only
    slow (stalled past the timeout) and registers its live sockets again."""
    return f"rt:presence:settled:{node_id}"
