"""celery beat: every periodic task, by name, and the queue each task runs on.

Each sweep takes a Redis lock (realtime.locks), so a second beat or a slow run
never makes it run twice at once. `expires` drops ticks that waited too long in
the queue instead of running a backlog of identical sweeps.
"""

# Modules holding task definitions (imported by the worker).
TASK_MODULES = [
    "tasks.kafka",
    "tasks.push",
]

# The outbox relay has its own queue (and worker), so a Kafka outage that makes
# it wait on timeouts never delays receipts or pushes.
TASK_ROUTES = {
    "tasks.kafka.relay_outbox": {"queue": "outbox"},
}

SCHEDULE = {
    # Kafka persistence: p99 within 5 s of the state change (PROTOCOL §9).
    "relay-outbox-to-kafka": {
        "task": "tasks.kafka.relay_outbox",
        "schedule": 0.5,
        "options": {"expires": 2},
    },
}
