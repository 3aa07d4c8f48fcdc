"""Call timers (PROTOCOL §10): ring timeout and reconnect grace, by a beat sweep."""
from __future__ import annotations

from realtime import keys, locks
from realtime.redis_client import get_redis
from workers import calls

from .app import app

# The sweep runs every half second; its lock outlives one run's budget.
SWEEP_BUDGET_S = 5
SWEEP_LOCK_TTL_S = 15
# The reconcile reads every live call (a few commands each): far less often.
RECONCILE_LOCK_TTL_S = 60


@app.task(name="tasks.calls.sweep_deadlines", acks_late=True, soft_time_limit=10, time_limit=12)
def sweep_deadlines() -> int:
    """Idempotent (every deadline is re-checked against the call's state), hence acks_late."""
    with locks.held(get_redis(), keys.sweep_lock("calls"), SWEEP_LOCK_TTL_S) as mine:
        if not mine:
            return 0
        return calls.sweep_deadlines(SWEEP_BUDGET_S)


@app.task(name="tasks.calls.reconcile_devices", acks_late=True, soft_time_limit=50, time_limit=55)
def reconcile_devices() -> int:
    """Idempotent (a device already in its grace is skipped; the grace re-checks), hence acks_late."""
    with locks.held(get_redis(), keys.sweep_lock("calls-devices"), RECONCILE_LOCK_TTL_S) as mine:
        if not mine:
            return 0
        return calls.reconcile_devices()
