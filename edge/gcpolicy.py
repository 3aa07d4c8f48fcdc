"""The edge's settings for CPython's cyclic garbage collector.

An edge process holds thousands of long-lived connections, each a few dozen
container objects (the Engine.IO socket, its queue and events, the session, the
room sets). CPython's collector is generational but not incremental: a full
collection walks every tracked object while the whole node stands still, and the
collector runs one each time the old generation has grown by a quarter. During a
connect storm the old generation grows all the time, so full collections come
one after another, each longer than the last.

Measured on the 2-core dev machine (bench W1, 10,000 connections over two
nodes, Python's defaults): 5-7 full collections per node during the storm,
100-250 ms of CPU each (about 0.4 us per tracked object), 1.1-1.9 s in all; every
connect in flight waits behind them, which is most of the connect p99.
About 100,000 of the objects a full collection walks are the imported modules
and the node itself, alive until exit.

So, at start, once the node is built:
- everything alive is frozen (`gc.freeze()`): moved to a generation the
  collector never scans. Objects frozen this way are still freed by reference
  counting; only a reference cycle among them would outlive its use.
- the young generation's threshold is raised from 700 to EDGE_GC_YOUNG_THRESHOLD
  allocations, so that the objects of a connect in flight (a handshake yields to
  Redis and back several times) have finished with before a collection runs,
  instead of being promoted to the old generation where only a full collection
  frees them. A young collection then walks at most that many objects (a few ms).
  The older generations keep Python's ratios, so a full collection still comes
  after the same growth in proportion, but ~14x less often in absolute terms.
- the middle generation is collected every EDGE_GC_MIDDLE_THRESHOLD + 1 young
  collections instead of every 11. In a storm nothing a young collection walks
  is garbage: all of it is promoted, and a middle collection walks everything
  promoted since the last one. Each object is walked there once whatever the
  threshold, so the work is the same, in pieces: measured (bench W1, 10,000
  connections), one 180-200 ms middle collection per node near the end of the
  storm, both nodes within 100 ms of each other, became 25-55 ms ones, and the
  connect p99 went from 229-270 ms to 196-211 ms (four runs each).
  The old generation's threshold (middle collections between two full ones) is
  scaled by as much, so a full collection is considered after as many young
  collections as with Python's ratios: full collections do not come more often.
Collections that stop the node for long are logged, so that an operator sees it.
"""
from __future__ import annotations

import gc
import logging
import time

from realtime.settings import Settings

log = logging.getLogger(__name__)

# A collection that stops the node at least this long is logged (at WARNING).
SLOW_COLLECTION_MS = 100.0


def apply(settings: Settings) -> int:
    """Apply the policy to this process; returns how many objects were frozen."""
    young, middle, old = gc.get_threshold()
    if settings.edge_gc_young_threshold > 0:
        young = settings.edge_gc_young_threshold
    if settings.edge_gc_middle_threshold > 0:
        middle, old = settings.edge_gc_middle_threshold, _scaled_old(middle, old, settings.edge_gc_middle_threshold)
    gc.set_threshold(young, middle, old)
    frozen = 0
    if settings.edge_gc_freeze:
        gc.collect()
        gc.freeze()
        frozen = gc.get_freeze_count()
    if _log_slow_collections not in gc.callbacks:
        gc.callbacks.append(_log_slow_collections)
    log.info("gc: thresholds %s, %d objects frozen", gc.get_threshold(), frozen)
    return frozen


def _scaled_old(middle: int, old: int, new_middle: int) -> int:
    """The old generation's threshold that, with `new_middle`, considers a full
    collection after as many young collections as (middle, old) did. A generation is
    collected when its count exceeds its threshold, hence the +1s: Python's (10, 10)
    considers one every 11 x 11 = 121 young collections; with a middle of 1, every
    2 x 60 = 120."""
    return max(1, round((middle + 1) * (old + 1) / (new_middle + 1)) - 1)


_started_at = 0.0


def _log_slow_collections(phase: str, info: dict) -> None:
    global _started_at
    if phase == "start":
        _started_at = time.perf_counter()
        return
    paused_ms = (time.perf_counter() - _started_at) * 1000
    if paused_ms >= SLOW_COLLECTION_MS:
        try:
            log.warning("gc: generation %d collection stopped the node for %.0f ms (%d objects freed)",
                        info["generation"], paused_ms, info["collected"])
        except Exception:
            # A collection while the process exits: logging asks eventlet for the current
            # thread, which fails once the greenlets are being finalized, and an exception
            # here would only be printed as "Exception ignored in" noise.
            pass
