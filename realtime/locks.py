"""Redis locks for periodic work: two beats, or two workers picking up the same
periodic task, must not run one sweep twice at once."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import redis


@contextlib.contextmanager
def held(r: redis.Redis, name: str, ttl_s: float) -> Iterator[bool]:
    """Try to take the lock without waiting; yields whether it was taken.

    The TTL frees the lock if its holder dies; work under the lock must finish
    well within it (the Celery task time limit is set below the TTL).
    """
    lock = r.lock(name, timeout=ttl_s, blocking=False)
    acquired = lock.acquire(blocking=False)
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass  # expired meanwhile; someone else may hold it now


@contextlib.contextmanager
def waiting(r: redis.Redis, name: str, ttl_s: float, wait_s: float,
            busy: Callable[[], Exception], sleep_s: float = 0.01) -> Iterator[None]:
    """Hold the lock for a short state change, waiting at most wait_s for it.

    Raises busy() when the lock stays taken; the TTL frees it if its holder dies.
    """
    lock = r.lock(name, timeout=ttl_s, blocking_timeout=wait_s, sleep=sleep_s)
    if not lock.acquire():
        raise busy()
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # expired meanwhile
