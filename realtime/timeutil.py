"""Wire time format: ISO 8601 UTC with milliseconds and `Z` (PROTOCOL §11)."""
from __future__ import annotations

import time
from datetime import datetime, timezone


def now() -> float:
    """Wall-clock seconds; the one clock policy code is handed (injected in tests)."""
    return time.time()


def iso(ts: float | datetime | None) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        dt = ts.astimezone(timezone.utc)
    else:
        dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    # isoformat truncates to milliseconds as the wire wants, at half strftime's cost
    # (a connect formats several); [:-6] drops its "+00:00".
    return dt.isoformat(timespec="milliseconds")[:-6] + "Z"


def from_iso(text: str) -> float:
    """Parse a wire timestamp back to epoch seconds (raises ValueError)."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def utc_datetime(ts: float) -> datetime:
    """A naive-UTC datetime as MongoDB stores it, at millisecond precision."""
    dt = datetime.fromtimestamp(round(ts, 3), tz=timezone.utc)
    return dt.replace(tzinfo=None)
