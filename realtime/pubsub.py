"""A Redis pub/sub subscription that survives Redis restarts."""
from __future__ import annotations

import logging
from typing import Callable

import redis

from .redis_client import make_redis
from .settings import Settings

log = logging.getLogger(__name__)


def listen_forever(settings: Settings, channel: str, on_message: Callable[[str], None],
                   sleep: Callable[[float], None], retry_s: float) -> None:
    """Call on_message(data) for every message on the channel, resubscribing after
    a failure (retry_s later). Runs in its own green thread; never returns."""
    while True:
        pubsub = None
        try:
            conn = make_redis(settings, socket_timeout=None)
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel)
            for message in pubsub.listen():
                if message.get("type") == "message":
                    on_message(message["data"])
        except redis.RedisError as exc:
            log.warning("listener of %s lost Redis (%s); retrying", channel, exc)
        except Exception:
            log.exception("listener of %s failed; retrying", channel)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:
                    pass
        sleep(retry_s)
