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


# Rooms whose emits travel on a Redis channel of their own (realtime.fanout): a
# node subscribes to one while it has a member in it.
ROUTED_ROOM_PREFIXES = ("user:", "conv:")


# --- Auth ---------------------------------------------------------------------
# Written by the auth service (PROTOCOL §2); we only read / subscribe.
REVOCATION_CHANNEL = "auth:revocations"


def revoked_session(session_id: str) -> str:
    return f"auth:revoked:{session_id}"


def seq_lock(conversation_id: str) -> str:
    """Senders of one conversation take turns assigning seq (realtime.actions.messages)."""
    return f"rt:lock:seq:{conversation_id}"


def seq_hint(conversation_id: str) -> str:
    """The last seq this layer assigned in a conversation (a hint: the unique index on
    (conversation_id, seq) is the guarantee)."""
    return f"rt:seq:{conversation_id}"


# set of conversation ids whose seq hint moved since `conversations.last_seq` was last
# advanced (realtime.actions.conversations.advance_due_last_seqs, a beat sweep).
LAST_SEQ_DUE = "rt:lastseq:due"
# the due set taken by a sweep run, kept until its writes are done, so a run killed
# midway leaves it to the next.
LAST_SEQ_APPLYING = "rt:lastseq:applying"
LAST_SEQ_SWEEP_LOCK = "rt:lock:sweep:last-seq"


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
# set of the ids of calls not ended (realtime.calls.store.save keeps it): what the sweep
# for participant devices left without a socket and without a grace looks through.
CALLS_LIVE = "rt:calls:live"


# --- Presence (PROTOCOL §5) ---------------------------------------------------------
def presence(user_id: str) -> str:
    """hash: chosen, message, offline_since, last_seen, announced (JSON), announced_at"""
    return f"rt:presence:{user_id}"


# zset user_id -> when to look at the user's presence again (epoch s); a user
# being settled carries a lease score in the future (realtime.presence.store).
PRESENCE_DUE = "rt:presence:due"
# hash user_id -> lease end (epoch s) of the settler working on the user now.
PRESENCE_LEASES = "rt:presence:leases"
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


# --- Typing (PROTOCOL §6) ----------------------------------------------------------
# zset "<conversation>/<user>" member -> deadline (epoch s). An entry means "announced
# as typing, stop not yet announced"; whoever removes it (edge timer, stop, sweep)
# announces the stop, so it is announced once.
TYPING_DEADLINES = "rt:typing:deadlines"
TYPING_SWEEP_LOCK = "rt:lock:sweep:typing"


def pair(conversation_id: str, user_id: str) -> str:
    """One (conversation, user) as a single field/member; length-prefixed so that
    no two pairs can collide whatever characters the ids contain."""
    return f"{len(conversation_id)}:{conversation_id}:{user_id}"


def split_pair(member: str) -> tuple[str, str]:
    length, _, rest = member.partition(":")
    n = int(length)
    return rest[:n], rest[n + 1:]


# --- Read receipts (PROTOCOL §7) -------------------------------------------------------
# hash pair -> JSON of the reads not yet aggregated (written by the edge).
READS_PENDING = "rt:reads:pending"
# hash pair -> JSON target of an aggregation in progress; cleared after the
# MongoDB write and the events, so a worker killed mid-run leaves it to redo.
READS_FLUSHING = "rt:reads:flushing"
READS_FLUSH_LOCK = "rt:lock:sweep:reads"
# hash of counters (writes, receipts, ...) for operators and benchmarks.
READS_STATS = "rt:stats:reads"


def reads_flushed(pair_member: str) -> str:
    """Set (with a TTL of RECEIPT_WINDOW_S) when a pair was last aggregated."""
    return f"rt:reads:flushed:{pair_member}"


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


def push_clear_debounce(user_id: str, conversation_id: str) -> str:
    """Set while a read of this conversation has already asked for a silent clear."""
    return f"rt:push:clear:{len(user_id)}:{user_id}:{conversation_id}"
