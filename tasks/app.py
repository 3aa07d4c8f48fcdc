"""The one Celery app (`celery -A tasks.app ...`). JSON only; Redis broker."""
from __future__ import annotations

from celery import Celery

import beat_schedule
from realtime.settings import get_settings

_settings = get_settings()

app = Celery("realtime", broker=_settings.redis_url, include=beat_schedule.TASK_MODULES)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    # Tasks are acknowledged on start unless a task opts in with acks_late=True,
    # which only idempotent tasks do.
    task_acks_late=False,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Timeouts on the broker connection itself.
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": 300,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
    },
    task_default_queue="default",
    task_routes=beat_schedule.TASK_ROUTES,
    beat_schedule=beat_schedule.SCHEDULE,
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=True,
)
