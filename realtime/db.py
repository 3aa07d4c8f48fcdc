"""MongoDB connection (mongoengine over pymongo), with timeouts on every call.

Only what both MongoDB and FerretDB 1.x support is used: no transactions, no
change streams, no partial indexes.
"""
from __future__ import annotations

import threading

import mongoengine
import pymongo.errors

from .errors import UNAVAILABLE, ApiError
from .settings import Settings, get_settings

# Milliseconds. A database that does not answer within these is `unavailable`.
MONGO_SERVER_SELECTION_TIMEOUT_MS = 2000
MONGO_CONNECT_TIMEOUT_MS = 2000
MONGO_SOCKET_TIMEOUT_MS = 5000

_lock = threading.Lock()
_connected_url: str | None = None


def connect(settings: Settings | None = None) -> None:
    """Connect the default mongoengine alias once per process (idempotent)."""
    global _connected_url
    settings = settings or get_settings()
    with _lock:
        if _connected_url == settings.mongo_url:
            return
        if _connected_url is not None:
            mongoengine.disconnect()
        mongoengine.connect(
            host=settings.mongo_url,
            serverSelectionTimeoutMS=MONGO_SERVER_SELECTION_TIMEOUT_MS,
            connectTimeoutMS=MONGO_CONNECT_TIMEOUT_MS,
            socketTimeoutMS=MONGO_SOCKET_TIMEOUT_MS,
            tz_aware=False,
            uuidRepresentation="standard",
        )
        _connected_url = settings.mongo_url


# Errors meaning "the database is not reachable right now", as opposed to a bug.
DB_DOWN_ERRORS = (
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.AutoReconnect,
    pymongo.errors.NetworkTimeout,
    pymongo.errors.ConnectionFailure,
    pymongo.errors.ExecutionTimeout,
)


def unavailable(exc: BaseException) -> ApiError:
    err = ApiError(UNAVAILABLE, "database unavailable")
    err.__cause__ = exc
    return err
