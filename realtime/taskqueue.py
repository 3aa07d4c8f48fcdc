"""Enqueue Celery tasks by name from any process (the edge never imports tasks/).

A send-only Celery client on the same Redis broker as tasks.app, with the same
JSON serializer and transport timeouts.
"""
from __future__ import annotations

import functools

from celery import Celery

from .settings import get_settings

# Task names (defined in tasks/push.py).
PUSH_CONVERSATION_ACTIVITY = "tasks.push.conversation_activity"
PUSH_FLUSH = "tasks.push.flush"
PUSH_DELIVER = "tasks.push.deliver"
PUSH_CALL_MISSED = "tasks.push.call_missed"
PUSH_CLEAR = "tasks.push.clear"

# Push work has a queue (and a worker) of its own. It comes in bursts that users drive
# (every read asks for a clear, every send for a decision) and waits on providers' HTTP
# timeouts, while the periodic sweeps on "default" arrive from beat with `expires` of a
# second or two: sharing one queue, a burst of clears made sweep ticks expire unrun, and
# read receipts, typing expiry and call deadlines stalled until the burst was worked off.
PUSH_QUEUE = "push"
TASK_ROUTES = {name: {"queue": PUSH_QUEUE}
               for name in (PUSH_CONVERSATION_ACTIVITY, PUSH_FLUSH, PUSH_DELIVER, PUSH_CALL_MISSED, PUSH_CLEAR)}


@functools.lru_cache(maxsize=1)
def client() -> Celery:
    settings = get_settings()
    app = Celery("realtime-client", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="default",
        task_routes=TASK_ROUTES,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
        # A broker that is down fails the send at once instead of retrying
        # (the caller decides what a lost enqueue means).
        task_publish_retry=False,
    )
    return app


def send(name: str, args: list | tuple = (), *, countdown: float | None = None) -> None:
    client().send_task(name, args=list(args), countdown=countdown)
