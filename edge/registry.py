"""Group commit for the node's writes to the connection registry (realtime.connections).

In a connect or disconnect storm every socket registers or unregisters itself, and
each of those was a pipeline of its own: a round trip, a pooled connection and
redis-py's per-pipeline Python work, hundreds at once (the pool ran dry in a 5,000
socket disconnect). Here the writes that arrive while one batch is in flight go
together in the next one. Every caller still waits for its own batch, so a socket is
in the registry when `save` returns, as before, and a Redis failure reaches each
caller of the failed batch. Batches run one after another, in submission order, so a
save and a later remove of the same socket are applied in that order. A batch is one
command (realtime.connections.apply), applied in the order its writes came.
"""
from __future__ import annotations

from typing import Callable

import redis

from realtime import connections


class _Batch:
    __slots__ = ("ops", "done", "error")

    def __init__(self, done):
        self.ops: list[connections.Write] = []
        self.done = done
        self.error: Exception | None = None


class RegistryWriter:
    def __init__(self, r: redis.Redis, *, spawn: Callable, make_event: Callable,
                 yield_: Callable[[], None] = lambda: None):
        self.redis = r
        self.spawn = spawn
        self.make_event = make_event  # threading.Event-like: set() / wait()
        # Lets the greenthreads that are ready run before a batch is taken, so that
        # the connects of one pass of the hub share it (eventlet: sleep(0)).
        self.yield_ = yield_
        self.pending: _Batch | None = None
        self.flushing = False
        self.apply = connections.apply   # (redis, writes): one batch

    def save(self, conn: connections.Connection) -> None:
        self._run(conn)

    def remove(self, sid: str, user_id: str, node_id: str) -> None:
        self._run((sid, user_id, node_id))

    def _run(self, op: connections.Write) -> None:
        batch = self.pending
        if batch is None:
            batch = self.pending = _Batch(self.make_event())
        batch.ops.append(op)
        if not self.flushing:
            self.flushing = True
            self.spawn(self._flush)
        batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _flush(self) -> None:
        try:
            while self.pending is not None:
                self.yield_()
                batch, self.pending = self.pending, None
                try:
                    self.apply(self.redis, batch.ops)
                except redis.RedisError as exc:
                    batch.error = exc
                except Exception as exc:  # pragma: no cover - never leave callers waiting
                    batch.error = redis.RedisError(f"registry write failed: {exc!r}")
                batch.done.set()
        finally:
            self.flushing = False
