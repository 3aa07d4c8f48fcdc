"""Presence (PROTOCOL §5): who is online, with which status, across edge nodes.

- `policy`: the timing and aggregation rules, pure functions of (state, now, settings).
- `store`: where presence lives in Redis and the small atomic scripts around it.
- `realtime.actions.presence`: the state changes and the events they send.
"""
