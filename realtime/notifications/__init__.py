"""Notifications (PROTOCOL §8): who learns about what, how, and when.

`policy` holds the decisions as pure functions (tested with an injected clock);
`store` reads and writes devices and settings; the state changes themselves live
in `realtime.actions.notifications`.
"""
