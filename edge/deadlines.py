"""One timer loop per node for per-socket deadlines (auth grace, token expiry).

A heap only nominates candidates; when one comes due the callback re-checks the
socket's real state (a refreshed token moves its deadline, a disconnected socket
has none), so stale heap entries are harmless.
"""
from __future__ import annotations

import heapq
import itertools
import logging
from typing import Callable

log = logging.getLogger(__name__)

# How often the loop wakes up. Deadlines fire at most this late.
DEADLINE_TICK_S = 0.2


class DeadlineLoop:
    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], None]):
        self._clock = clock
        self._sleep = sleep
        self._heap: list[tuple[float, int, str, str]] = []
        self._counter = itertools.count()
        self._handlers: dict[str, Callable[[str, float], None]] = {}

    def on(self, kind: str, handler: Callable[[str, float], None]) -> None:
        """handler(sid, now) is called when a deadline of `kind` for `sid` comes due."""
        self._handlers[kind] = handler

    def schedule(self, at: float, kind: str, sid: str) -> None:
        heapq.heappush(self._heap, (at, next(self._counter), kind, sid))

    def due(self, now: float) -> list[tuple[str, str]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, sid = heapq.heappop(self._heap)
            out.append((kind, sid))
        return out

    def run_forever(self) -> None:
        while True:
            now = self._clock()
            for kind, sid in self.due(now):
                try:
                    self._handlers[kind](sid, now)
                except Exception:  # a bad socket must not stop every other deadline
                    log.exception("deadline %s for %s failed", kind, sid)
            self._sleep(DEADLINE_TICK_S)
