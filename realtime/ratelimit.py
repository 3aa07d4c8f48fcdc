"""Per-socket token buckets (PROTOCOL §11), as pure functions of (state, now, rate).

A bucket holds `burst = 2 * rate` tokens and refills at `rate` per second.
"""
from __future__ import annotations

from dataclasses import dataclass

# Events per second per socket; burst is twice the rate.
DEFAULT_RATE_PER_S = 20.0
RATES_PER_S = {
    "message_send": 20.0,
    "typing_start": 5.0,
    "typing_stop": 5.0,
    "presence_update": 2.0,
    "call_signal": 50.0,
}
BURST_FACTOR = 2.0


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated_at: float


def rate_for(event: str) -> float:
    return RATES_PER_S.get(event, DEFAULT_RATE_PER_S)


def take(bucket: Bucket | None, now: float, rate: float) -> tuple[bool, Bucket]:
    """Try to take one token. Returns (allowed, new bucket)."""
    burst = rate * BURST_FACTOR
    if bucket is None:
        tokens = burst
    else:
        elapsed = max(0.0, now - bucket.updated_at)
        tokens = min(burst, bucket.tokens + elapsed * rate)
    if tokens >= 1.0:
        return True, Bucket(tokens - 1.0, now)
    return False, Bucket(tokens, now)


def count_recent(times: list[float], now: float, window_s: float) -> list[float]:
    """Drop the timestamps older than the window (for the abuse counter)."""
    cutoff = now - window_s
    return [t for t in times if t > cutoff]
