"""Event handlers: validate the payload's own fields, call an action, shape the ack.

Authentication, size and rate limits are checked before a handler runs
(`edge.dispatch`). Each module exposes `EVENTS`, a list of EventSpec.
"""
from . import auth, calls, messages, presence, push, receipts, rooms, typing

MODULES = [auth, rooms, messages, presence, typing, receipts, push, calls]
