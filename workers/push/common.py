"""What every provider shares: the outcome of one send, keep-alive HTTP clients."""
from __future__ import annotations

import email.utils
import os
import threading
import time
from dataclasses import dataclass

import httpx

SENT = "sent"
GONE = "gone"        # the provider says the token/subscription no longer exists
RETRY = "retry"      # transient: 429, 5xx, timeouts, connection errors
FAILED = "failed"    # permanent for this push (bad request, auth misconfigured)

# Seconds. A provider that does not answer within these is a transient failure.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0
# Connections kept open per provider host between tasks.
MAX_KEEPALIVE = 20


@dataclass(frozen=True)
class Outcome:
    status: str
    http_status: int | None = None
    reason: str = ""
    retry_after: float | None = None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse Retry-After: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def transient(status: int) -> bool:
    return status == 429 or status >= 500


_clients: dict[str, httpx.Client] = {}
_clients_pid = os.getpid()
_clients_lock = threading.Lock()


def client(name: str, *, http2: bool = False, http1: bool = True) -> httpx.Client:
    """One keep-alive client per provider per process, reused across tasks.

    Celery's prefork pool forks after import: a client inherited from the parent
    would share its sockets, so clients are made (again) in each process.
    """
    global _clients_pid
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()
            _clients_pid = os.getpid()
        made = _clients.get(name)
        if made is None:
            made = httpx.Client(
                http1=http1, http2=http2,
                timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                limits=httpx.Limits(max_keepalive_connections=MAX_KEEPALIVE, keepalive_expiry=300),
                # Providers are asked by their configured URL; no env proxies in between.
                trust_env=False,
            )
            _clients[name] = made
        return made


def reset_client(name: str) -> None:
    with _clients_lock:
        made = _clients.pop(name, None)
    if made is not None:
        made.close()


def from_response(resp: httpx.Response, gone: bool, reason: str = "") -> Outcome:
    if 200 <= resp.status_code < 300:
        return Outcome(SENT, resp.status_code)
    if gone:
        return Outcome(GONE, resp.status_code, reason)
    if transient(resp.status_code):
        return Outcome(RETRY, resp.status_code, reason, retry_after(resp.headers.get("retry-after")))
    return Outcome(FAILED, resp.status_code, reason or resp.text[:200])
