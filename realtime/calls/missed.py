"""Missed-call notification hook: hands a missed call to notifications (PROTOCOL §8,
`kind: call_missed`) as a Celery task, so a ring timeout never waits on push delivery."""
from __future__ import annotations

import logging

from .. import taskqueue

log = logging.getLogger(__name__)


def notify_missed_call(ctx, call: dict, user_ids: list[str]) -> None:
    """Called once per call with the callees who did not pick up before the ring timeout."""
    if not user_ids:
        return
    try:
        taskqueue.send(taskqueue.PUSH_CALL_MISSED,
                       [call["call_id"], call["conversation_id"], call["caller"]["user_id"], list(user_ids)])
    except Exception as exc:  # the call has ended either way; only the notice is lost
        log.warning("could not enqueue the missed-call notification of %s: %s", call["call_id"], exc)
