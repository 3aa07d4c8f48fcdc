"""Call deadlines (ring timeout, reconnect grace): the sweep that re-checks them.

Edges and workers nominate deadlines (participants on a node that died without
closing its sockets are nominated here, from the node heartbeats) in a Redis zset; this sweep picks the due
ones and hands each to realtime.actions.calls.run_deadline, which re-checks the
call's real state under its lock before acting, so an early, late or repeated
nomination is harmless.
"""
from __future__ import annotations

import logging

from realtime.actions import calls
from realtime.calls import store

from . import runtime

log = logging.getLogger(__name__)


def sweep_deadlines(budget_s: float) -> int:
    """Handle every due deadline, for at most `budget_s`. Returns how many were handled."""
    ctx = runtime.context()
    started = ctx.clock()
    handled = 0
    try:
        calls.devices_on_dead_nodes(ctx)
    except Exception:
        log.exception("call participants on dead nodes: check failed")
    while ctx.clock() - started < budget_s:
        members = store.due(ctx.redis, ctx.clock())
        if not members:
            break
        for member in members:
            try:
                calls.run_deadline(ctx, member)
            except Exception:
                # Left nominated: the next sweep retries it.
                log.exception("call deadline %s failed", member)
                continue
            handled += 1
        if len(members) < 200:
            break
    return handled


def reconcile_devices() -> int:
    """Graces the edge could not start (realtime.actions.calls.devices_without_socket)."""
    return calls.devices_without_socket(runtime.context())
