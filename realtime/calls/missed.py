"""Missed-call notification hook.

Notifications (PROTOCOL §8, `kind: call_missed`) are built on another branch; once
they exist, this is where a missed call hands over to them. Until then it does nothing.
"""
from __future__ import annotations


def notify_missed_call(ctx, call: dict, user_ids: list[str]) -> None:
    """Called once per call with the callees who did not pick up before the ring timeout."""
    return None
