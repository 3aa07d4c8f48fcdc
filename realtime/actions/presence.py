"""Presence (PROTOCOL §5): the state changes and the events they send.

Connect, disconnect, `presence_update` and node death only record facts and
nominate the user (realtime.presence.store); `settle_due` then decides with the
policy (realtime.presence.policy) and, for real changes only, writes what was
announced, appends `presence.changed` to the outbox (Kafka `chat.presence`) and
publishes `user_presence`. Settling works in batches: one claim, one read, one
write, one outbox append and one pub/sub message per batch, each a single command,
so a reconnect storm costs a few commands per batch, not per user or subscriber.

`user_presence` is delivered through the pub/sub channel
keys.PRESENCE_ANNOUNCE_CHANNEL, which every edge node listens to and delivers to
its local sockets in the room keys.presence_room(user) (the subscribers). Edge
nodes and workers publish the same way.
"""
from __future__ import annotations

import functools
import logging

import orjson

from .. import connections, envelope, keys, outbox, timeutil
from ..db import DB_DOWN_ERRORS, unavailable
from ..models import Conversation
from ..presence import policy, store
from ..settings import presence_coalesce_s
from . import calls
from .context import Actor, Context

log = logging.getLogger(__name__)

# Users settled per claimed batch.
SETTLE_BATCH = 1000
# Longest status message kept (characters); longer is invalid_payload.
MAX_MESSAGE_CHARS = 256


@functools.lru_cache(maxsize=1)
def coalesce_s() -> float:
    return presence_coalesce_s()


def wire(user_id: str, shown: policy.Shown) -> dict:
    return {"user_id": user_id, "status": shown.status, "message": shown.message,
            "last_seen": timeutil.iso(shown.last_seen)}


# --- facts ---------------------------------------------------------------------------
def connected(ctx: Context, user_id: str) -> None:
    """A socket of the user authenticated (it is already in realtime.connections)."""
    store.nominate(ctx.redis, user_id, ctx.clock())


def disconnected(ctx: Context, user_id: str) -> None:
    """A socket of the user closed (already removed from realtime.connections).

    The close time is recorded on every close; it only counts once no socket is
    left (the policy looks at the live connections first)."""
    now = ctx.clock()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hset(keys.presence(user_id), "offline_since", repr(now))
    store.nominate(pipe, user_id, now)
    pipe.execute()


def record(ctx: Context, connected_users: set[str], closed: dict[str, float]) -> None:
    """Batched form of connected/disconnected for many users in one round trip
    (an edge node buffers its socket events for one settle tick)."""
    if not connected_users and not closed:
        return
    now = ctx.clock()
    pipe = ctx.redis.pipeline(transaction=False)
    for user_id, at in closed.items():
        pipe.hset(keys.presence(user_id), "offline_since", repr(at))
    store.nominate_many(pipe, connected_users | set(closed), now)
    pipe.execute()


def update(ctx: Context, actor: Actor, status: str, message: str | None) -> dict:
    """`presence_update`: store the chosen status; announced by the next settle."""
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hset(keys.presence(actor.user_id), mapping={"chosen": status, "message": message or ""})
    store.nominate(pipe, actor.user_id, ctx.clock())
    pipe.execute()
    return {"status": status, "message": message}


# --- subscriptions -------------------------------------------------------------------
def visible_to(user_id: str, target_ids: list[str]) -> set[str]:
    """The targets that share a conversation with the user (and the user itself)."""
    others = [t for t in target_ids if t != user_id]
    allowed = {user_id} & set(target_ids)
    if not others:
        return allowed
    try:
        shared = Conversation.objects(__raw__={"$and": [{"members": user_id},
                                                        {"members": {"$in": others}}]}).only("members")
        wanted = set(others)
        for conv in shared:
            allowed.update(wanted.intersection(conv.members or ()))
    except DB_DOWN_ERRORS as exc:
        raise unavailable(exc) from exc
    return allowed


def snapshot(ctx: Context, user_ids: list[str]) -> dict[str, dict]:
    """What subscribers were last told about each user: later `user_presence`
    events are exactly the changes from this."""
    shown = store.load_announced(ctx.redis, user_ids)
    return {user_id: {k: v for k, v in wire(user_id, s).items() if k != "user_id"}
            for user_id, s in shown.items()}


# --- settling ------------------------------------------------------------------------
def _event(ctx: Context, user_id: str, payload: dict, at: float) -> envelope.Envelope:
    return envelope.make("presence.changed", ctx.source, payload, user_id=user_id,
                         event_id=envelope.stable_event_id("presence.changed", user_id, repr(at)),
                         occurred_at=at)


def settle_due(ctx: Context, *, limit: int = SETTLE_BATCH) -> int:
    """Decide about every user whose time came; returns how many were announced."""
    r = ctx.redis
    now = ctx.clock()
    lease_until = now + store.CLAIM_LEASE_S
    user_ids = [store._str(u) for u in store.scripts(r).claim(
        keys=[keys.PRESENCE_DUE, keys.PRESENCE_LEASES], args=[repr(now), repr(lease_until), limit])]
    if not user_ids:
        return 0
    states = store.load_states(r, user_ids)
    grace = ctx.settings.presence_offline_grace_s
    window = coalesce_s()
    announced: list[dict] = []
    events: list[envelope.Envelope] = []
    settled: list[tuple] = []
    for user_id in user_ids:
        decision = policy.decide(states[user_id], now, grace_s=grace, coalesce_s=window)
        if decision.announce is not None:
            payload = wire(user_id, decision.announce)
            announced.append(payload)
            events.append(_event(ctx, user_id, payload, now))
        settled.append((user_id, decision.recheck_at, decision.state if decision.announce is not None else None))
    # What was announced and the end of the leases, then the outbox, then the subscribers.
    store.write_settled(r, repr(lease_until), settled)
    if announced:
        outbox.append(r, *events)
        r.publish(keys.PRESENCE_ANNOUNCE_CHANNEL, orjson.dumps(announced))
    return len(announced)


def settle_all_due(ctx: Context, *, max_batches: int = 50) -> int:
    total = 0
    for _ in range(max_batches):
        before = total
        total += settle_due(ctx)
        if total == before and not _has_due(ctx):
            break
    return total


def _has_due(ctx: Context) -> bool:
    return bool(ctx.redis.zcount(keys.PRESENCE_DUE, "-inf", repr(ctx.clock())))


# --- dead nodes ----------------------------------------------------------------------
def settle_node(ctx: Context, node_id: str, last_alive: float) -> int:
    """Settle every socket a node left behind (it died, or restarted under the
    same id): the sockets leave the registry, their users count them closed at
    `last_alive` (so a node found dead late does not add the grace on top) and
    are nominated; the next settle announces those with no socket left.
    Returns how many sockets were settled."""
    r = ctx.redis
    left = connections.of_node(r, node_id)
    if not left:
        return 0
    users = sorted(set(left.values()))
    pipe = r.pipeline(transaction=False)
    for sid, user_id in left.items():
        connections.remove(pipe, sid, user_id, node_id)
    for user_id in users:
        pipe.hset(keys.presence(user_id), "offline_since", repr(last_alive))
        store.nominate(pipe, user_id, ctx.clock())
    pipe.execute()
    log.info("settled %d sockets of %d users left by node %s", len(left), len(users), node_id)
    # The same sockets leave their calls: with the registry entries gone, the
    # call sweep could no longer find them on the dead node, so settle them here.
    try:
        calls.devices_gone(ctx, users)
    except Exception:
        log.exception("node %s: starting the call reconnect graces failed", node_id)
    return len(left)


def sweep_silent_nodes(ctx: Context) -> dict[str, int]:
    """Find nodes silent for PRESENCE_NODE_TIMEOUT_S and settle each once."""
    r = ctx.redis
    now = ctx.clock()
    cutoff = now - ctx.settings.presence_node_timeout_s
    settled = {}
    for node_id in connections.silent_nodes(r, now, ctx.settings.presence_node_timeout_s):
        # Re-check and claim atomically: a node that came back keeps its sockets.
        last_alive = store.scripts(r).claim_silent_node(keys=[keys.NODES_HEARTBEAT], args=[node_id, repr(cutoff)])
        if last_alive is None:
            continue
        settled[node_id] = settle_node(ctx, node_id, float(store._str(last_alive)))
        ctx.redis.set(keys.presence_node_settled(node_id), repr(now), ex=SETTLED_MARK_TTL_S)
    return settled


# How long a "you were settled as dead" mark waits for a node that was only slow.
SETTLED_MARK_TTL_S = 600


def was_settled(ctx: Context, node_id: str) -> bool:
    """Whether a sweep settled this (live) node as dead since the last check."""
    return ctx.redis.getdel(keys.presence_node_settled(node_id)) is not None


def node_restarted(ctx: Context, node_id: str) -> int:
    """At an edge node's start, before it serves: what its previous process left."""
    r = ctx.redis
    last_alive = r.zscore(keys.NODES_HEARTBEAT, node_id)
    r.delete(keys.presence_node_settled(node_id))   # about the previous process
    return settle_node(ctx, node_id, float(last_alive) if last_alive is not None else ctx.clock())

