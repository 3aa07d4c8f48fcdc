"""The periodic presence sweep (celery beat, `tasks.presence.sweep`).

Edge nodes settle presence themselves while they live; this sweep covers what
no live node can: nodes silent for PRESENCE_NODE_TIMEOUT_S (killed, hung, host
gone) have their sockets settled in one pass, and due decisions (grace ends,
coalesced changes) are settled even when no edge node runs. The policy and the
Redis writes are the ones the edge uses (realtime.actions.presence).
"""
from __future__ import annotations

import logging

from realtime import keys, locks
from realtime.actions import presence
from realtime.actions.context import Context

log = logging.getLogger(__name__)

LOCK_NAME = "presence"


def sweep(ctx: Context, lock_ttl_s: float) -> dict | None:
    """One pass under the sweep lock; None when another sweep holds it."""
    with locks.held(ctx.redis, keys.sweep_lock(LOCK_NAME), lock_ttl_s) as mine:
        if not mine:
            return None
        nodes = presence.sweep_silent_nodes(ctx)
        if nodes:
            log.info("presence sweep: settled silent nodes %s", nodes)
        announced = presence.settle_all_due(ctx)
        return {"nodes": nodes, "announced": announced}
