"""The Redis work of closed sockets, in batches (typing ends, call reconnect graces).

When thousands of sockets of one node close at once (a load balancer reset, the end of
a benchmark), python-socketio runs each one's disconnect handler in a greenthread of
its own. With every handler doing its own Redis round trips, thousands of greenthreads
wanted a pooled connection at once: the pool ran dry, the event hub starved, and
hundreds of hooks failed with `Timeout connecting to server`, losing typing stops and
call graces. Here the closed sockets queue up and one drain greenthread hands them to
the batch hooks, up to DISCONNECT_BATCH_SIZE at a time: each hook reads what it needs
for the whole batch in one pipeline, and the hooks of all closed sockets hold one
pooled connection at a time, whatever their number. As in edge.registry.RegistryWriter
there is no timer: the sockets that close while a batch is in flight make up the next one.

A hook is `hook(node, sessions)`. A RedisError is retried after BATCH_RETRY_DELAYS_S;
each retry gets the same list, so a hook whose work must not be done twice (a call
grace would restart later) removes from `sessions` those it has finished. After the
last retry the batch is given up for that hook and logged once, with its size.
"""
from __future__ import annotations

import collections
import logging
from typing import Any, Callable

import redis

from .sessions import SocketSession

log = logging.getLogger(__name__)

# Sessions per batch: bounds a hook's pipeline (and the replies held at once) to a few
# hundred commands, one round trip of a few milliseconds.
DISCONNECT_BATCH_SIZE = 500
# Pauses before each retry of a batch whose hook failed with a RedisError. Short: the
# work is worth doing only soon after the close (a typing indicator, a call grace).
BATCH_RETRY_DELAYS_S = (0.25, 1.0)

DisconnectBatchHook = Callable[[Any, list[SocketSession]], None]


class DisconnectBatcher:
    def __init__(self, node: Any, hooks: list[DisconnectBatchHook], *, spawn: Callable, sleep: Callable,
                 batch_size: int = DISCONNECT_BATCH_SIZE,
                 retry_delays_s: tuple[float, ...] = BATCH_RETRY_DELAYS_S):
        self.node = node
        self.hooks = hooks          # the node's list: hooks added later take part
        self.spawn = spawn
        self.sleep = sleep
        self.batch_size = batch_size
        self.retry_delays_s = retry_delays_s
        self.queue: collections.deque[SocketSession] = collections.deque()
        self.draining = False

    def submit(self, session: SocketSession) -> None:
        """Queue a closed socket; returns at once (its hooks run in the drain greenthread)."""
        self.queue.append(session)
        if not self.draining:
            self.draining = True
            self.spawn(self._drain)

    def _drain(self) -> None:
        try:
            while self.queue:
                count = min(len(self.queue), self.batch_size)
                batch = [self.queue.popleft() for _ in range(count)]
                for hook in self.hooks:
                    self._run(hook, batch)
        finally:
            self.draining = False

    def _run(self, hook: DisconnectBatchHook, batch: list[SocketSession]) -> None:
        pending = list(batch)       # the hook's own: it may remove what it has done
        attempts = len(self.retry_delays_s) + 1
        for attempt in range(1, attempts + 1):
            try:
                hook(self.node, pending)
            except redis.RedisError as exc:
                if attempt == attempts:
                    log.warning("disconnect batch: %s gave up on %d sockets after %d attempts: %r",
                                _name(hook), len(pending), attempts, exc)
                    return
                self.sleep(self.retry_delays_s[attempt - 1])
            except Exception:
                # A bug, not an outage: another attempt would fail the same way.
                log.exception("disconnect batch: %s failed for %d sockets", _name(hook), len(pending))
                return
            else:
                if attempt > 1:
                    log.info("disconnect batch: %s done for %d sockets at attempt %d",
                             _name(hook), len(batch), attempt)
                return


def _name(hook: Callable) -> str:
    return f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', repr(hook))}"
