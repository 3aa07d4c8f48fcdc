"""`presence_update`, `presence_subscribe`, `presence_unsubscribe` (PROTOCOL §5), and
the node's side of presence: connect/disconnect facts, the settle loop, delivery
of announcements to local subscribers, and settling what a previous process of
this node left behind.

A subscription is membership of the socket in the room keys.presence_room(target):
the announcement, published once per batch on keys.PRESENCE_ANNOUNCE_CHANNEL,
is delivered by each node to its own sockets in that room, so one change costs
one pub/sub message per batch whatever the number of subscribers.
"""
from __future__ import annotations

import logging

import orjson
import redis

from realtime import connections, keys, pubsub, validation
from realtime.actions import presence
from realtime.errors import CONFLICT, ApiError, invalid
from realtime.presence import policy

from ..dispatch import EventSpec

log = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 500
# How often each node settles due presences (grace ends, coalesced changes);
# also the batching window of a connect storm.
SETTLE_TICK_S = 0.1
# Every this many ticks the node checks whether a sweep took it for dead.
SETTLED_CHECK_TICKS = 10
# Every this many ticks the node removes registry entries of its sockets gone.
RECONCILE_TICKS = 50
# Delay before retrying the announcement subscription after a Redis failure.
LISTEN_RETRY_S = 1.0


class NodePresence:
    """Per-node presence state: which targets each local socket subscribed to."""

    def __init__(self, node):
        self.node = node
        self.subscriptions: dict[str, set[str]] = {}   # sid -> target user ids
        self.connected_users: set[str] = set()          # buffered until the next tick
        self.closed_users: dict[str, float] = {}        # user -> when a socket closed

    # --- socket lifecycle -------------------------------------------------------
    # No Redis I/O here: the events are buffered and written by the settle loop
    # once per tick in one pipeline, so a connect or disconnect storm costs one
    # round trip per tick, not one per socket (the registry entry itself is
    # written by the node). A node that dies with a buffered event is settled
    # by the sweep like any dead node.
    def on_authenticated(self, node, session) -> None:
        self.connected_users.add(session.user_id)

    def on_disconnect(self, node, session) -> None:
        self.subscriptions.pop(session.sid, None)
        if session.authenticated:
            self.closed_users[session.user_id] = node.clock()

    def flush(self) -> None:
        connected, self.connected_users = self.connected_users, set()
        closed, self.closed_users = self.closed_users, {}
        try:
            presence.record(self.node.ctx, connected, closed)
        except redis.RedisError:
            # Keep them for the next tick (a newer close time wins).
            self.connected_users |= connected
            for user_id, at in closed.items():
                self.closed_users.setdefault(user_id, at)
            raise

    def reconcile(self) -> None:
        """Registry entries of this node whose socket is gone (the unregister at
        disconnect failed, e.g. Redis was busy in a disconnect storm) are removed
        and their users count the socket as closed now."""
        registered = connections.of_node(self.node.redis, self.node.node_id)
        ghosts = {sid: user_id for sid, user_id in registered.items() if self.node.sessions.get(sid) is None}
        if not ghosts:
            return
        connections.apply(self.node.redis, [(sid, user_id, self.node.node_id) for sid, user_id in ghosts.items()])
        now = self.node.clock()
        for user_id in ghosts.values():
            self.closed_users.setdefault(user_id, now)
        log.warning("presence: removed %d registry entries of sockets gone", len(ghosts))

    # --- loops ----------------------------------------------------------------------
    def settle_loop(self) -> None:
        ticks = 0
        while True:
            try:
                ticks += 1
                if ticks % SETTLED_CHECK_TICKS == 0 and presence.was_settled(self.node.ctx, self.node.node_id):
                    self.register_again()
                if ticks % RECONCILE_TICKS == 0:
                    self.reconcile()
                self.flush()
                while presence.settle_due(self.node.ctx) >= presence.SETTLE_BATCH:
                    pass  # a storm: drain without sleeping
            except redis.RedisError as exc:
                log.warning("presence settle failed: %s", exc)
            except Exception:
                log.exception("presence settle failed")
            self.node.sio.sleep(SETTLE_TICK_S)

    def register_again(self) -> None:
        """A sweep took this node for dead (it stalled past the node timeout) and
        removed its sockets from the registry: put the live ones back."""
        sessions = [s for s in self.node.sessions.all() if s.authenticated]
        log.warning("presence: %s was settled as dead while alive; registering %d sockets again",
                    self.node.node_id, len(sessions))
        for session in sessions:
            self.node.save_connection(session)
        self.connected_users.update(s.user_id for s in sessions)

    def announce_listener(self) -> None:
        pubsub.listen_forever(self.node.settings, keys.PRESENCE_ANNOUNCE_CHANNEL,
                              lambda data: self.deliver(orjson.loads(data)), self.node.sio.sleep, LISTEN_RETRY_S)

    def deliver(self, payloads: list[dict]) -> None:
        sio = self.node.sio
        for payload in payloads:
            room = keys.presence_room(payload["user_id"])
            # Local sockets only: every node got the same batch.
            if sio.manager.rooms.get("/", {}).get(room):
                sio.emit("user_presence", payload, room=room, ignore_queue=True)


def _ids(data: dict) -> list[str]:
    return validation.id_list(data, "user_ids", max_items=MAX_IDS_PER_CALL)


def presence_update(node, session, data: dict) -> dict:
    status = data.get("status")
    if status not in policy.CHOOSABLE:
        raise invalid(f"status must be one of {', '.join(policy.CHOOSABLE)}")
    message = data.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > presence.MAX_MESSAGE_CHARS):
        raise invalid(f"message must be a string of at most {presence.MAX_MESSAGE_CHARS} characters")
    return presence.update(node.ctx, node.actor(session), status, message or None)


def presence_subscribe(node, session, data: dict) -> dict:
    targets = _ids(data)
    state: NodePresence = node.presence
    mine = state.subscriptions.setdefault(session.sid, set())
    allowed = presence.visible_to(session.user_id, targets)
    new = [t for t in targets if t in allowed and t not in mine]
    limit = node.settings.max_presence_subscriptions
    if len(mine) + len(new) > limit:
        raise ApiError(CONFLICT, f"at most {limit} presence subscriptions per socket")
    # Join first, then read: a change announced in between reaches the socket
    # as an event (at worst the same state twice), never falls between the two.
    for target in new:
        node.sio.enter_room(session.sid, keys.presence_room(target))
        mine.add(target)
    granted = [t for t in targets if t in allowed]
    return {"presences": presence.snapshot(node.ctx, granted),
            "forbidden": [t for t in targets if t not in allowed]}


def presence_unsubscribe(node, session, data: dict) -> dict:
    targets = _ids(data)
    mine = node.presence.subscriptions.get(session.sid, set())
    for target in targets:
        if target in mine:
            node.sio.leave_room(session.sid, keys.presence_room(target))
            mine.discard(target)
    return {}


EVENTS = [
    EventSpec("presence_update", presence_update),
    EventSpec("presence_subscribe", presence_subscribe),
    EventSpec("presence_unsubscribe", presence_unsubscribe),
]


def setup(node) -> None:
    node.presence = NodePresence(node)
    node.on_authenticated_hooks.append(node.presence.on_authenticated)
    node.on_disconnect_hooks.append(node.presence.on_disconnect)
    # Before serving: the sockets a previous process of this node id left behind
    # (killed, restarted by the supervisor) are settled now, not after a timeout.
    try:
        presence.node_restarted(node.ctx, node.node_id)
    except redis.RedisError as exc:
        # Not fatal: the beat sweep settles them once this node id looks silent.
        log.warning("presence: could not settle what a previous %s left: %s", node.node_id, exc)
    node.start_background(node.presence.settle_loop)
    node.start_background(node.presence.announce_listener)
