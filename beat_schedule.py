"""celery beat: every periodic task, by name, and the queue each task runs on.

Each sweep takes a Redis lock (realtime.locks), so a second beat or a slow run
never makes it run twice at once. `expires` drops ticks that waited too long in
the queue instead of running a backlog of identical sweeps.
"""
from realtime import taskqueue

# Modules holding task definitions (imported by the worker).
TASK_MODULES = [
    "tasks.kafka",
    "tasks.conversations",
    "tasks.calls",
    "tasks.presence",
    "tasks.typing",
    "tasks.receipts",
    "tasks.push",
]

# The outbox relay has its own queue (and worker), so a Kafka outage that makes
# it wait on timeouts never delays receipts or pushes; push tasks have theirs
# (realtime.taskqueue, which every sender of them uses), so a burst of pushes never
# makes the sweeps below wait past their `expires`.
TASK_ROUTES = {
    "tasks.kafka.relay_outbox": {"queue": "outbox"},
    **taskqueue.TASK_ROUTES,
}

SCHEDULE = {
    # Kafka persistence: p99 within 5 s of the state change (PROTOCOL §9).
    "relay-outbox-to-kafka": {
        "task": "tasks.kafka.relay_outbox",
        "schedule": 0.5,
        "options": {"expires": 2},
    },
    # Call ring timeouts and reconnect graces (PROTOCOL §10); every deadline is
    # re-checked against the call's state before acting.
    "sweep-call-deadlines": {
        "task": "tasks.calls.sweep_deadlines",
        "schedule": 0.5,
        "options": {"expires": 2},
    },
    # Call participants left with no socket and no reconnect grace (the edge's disconnect
    # batch gave up during a Redis outage): their grace starts within this tick.
    "reconcile-call-devices": {
        "task": "tasks.calls.reconcile_devices",
        "schedule": 15.0,
        "options": {"expires": 10},
    },
    # Presence: silent edge nodes' users go offline within
    # PRESENCE_NODE_TIMEOUT_S + 10 s (PROTOCOL §5); this tick is part of that bound.
    "presence-sweep": {
        "task": "tasks.presence.sweep",
        "schedule": 2.0,
        "options": {"expires": 4},
    },
    # Typing whose node died: ended within TYPING_EXPIRY_S + this (PROTOCOL §6).
    "expire-typing": {
        "task": "tasks.typing.expire_typing",
        "schedule": 1.0,
        "options": {"expires": 2},
    },
    # conversations.last_seq within about this of a send (readers take the Redis seq
    # hint meanwhile, PROTOCOL §4); one write per busy conversation per tick.
    "advance-last-seqs": {
        "task": "tasks.conversations.advance_last_seqs",
        "schedule": 1.0,
        "options": {"expires": 2},
    },
    # Receipts within 2 s of the read: RECEIPT_WINDOW_S + this tick at worst (PROTOCOL §7).
    "flush-reads": {
        "task": "tasks.receipts.flush_reads",
        "schedule": 0.25,
        "options": {"expires": 1},
    },
}
