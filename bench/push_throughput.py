"""Push delivery figures (issue 5):

1. pushes/s one worker process sends to a local Web Push service (RFC 8291
   encryption and the VAPID header included) and to the local FCM endpoint, both
   with the bare provider client and through the full delivery function (Redis
   idempotency key, MongoDB loads);
2. p99 from the `message_send` ack to the push arriving at a Web Push endpoint,
   through the running stack (edge, Celery worker), one message at a time.

    bin/with-env .venv/bin/python -m bench.push_throughput --pushes 1000 --latency 100

The stand-in services run in their own processes, so they do not share the GIL
with the sender.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from devtools import push_servers
from realtime import connections, db, timeutil
from realtime.actions.context import Context
from realtime.models import Notification, PushDevice
from realtime.notifications import policy, store
from realtime.redis_client import make_redis
from tests import support
from workers.push import common, delivery, fcm, webpush

PAYLOAD = policy.payload("message", "bench-conv", 1, 3, "alice", "a message of ordinary length, about sixty chars")


def start(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "devtools.push_servers", *args], cwd=support.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.stdout.readline()  # "listening on ..."
    return proc


def rate(n: int, fn) -> float:
    fn(0)  # warm up: connection, token exchange, VAPID JWT
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        outcome = fn(i)
        assert outcome in (common.SENT, delivery.DELIVERED), outcome
    elapsed = time.perf_counter() - t0
    print(f"  {n} pushes in {elapsed:.2f}s", file=sys.stderr, flush=True)
    return n / elapsed


def throughput(n: int) -> dict:
    settings = support.SETTINGS
    out = {}
    web = start(["webpush", "18551"], 18551)
    with tempfile.TemporaryDirectory() as tmp:
        creds_path = os.path.join(tmp, "sa.json")
        push_servers.make_fcm_credentials(creds_path, "bench", "http://127.0.0.1:18552/token")
        fcm_proc = start(["fcm", "18552", creds_path], 18552)
        try:
            sub = push_servers.Subscriber("http://127.0.0.1:18551/push/bench").subscription()
            print("measuring", file=sys.stderr, flush=True)
            out["webpush_client_per_s"] = rate(n, lambda i: webpush.send(settings, sub, PAYLOAD).status)
            fcm_settings = settings.__class__(**{**settings.__dict__, "fcm_project_id": "bench",
                                                 "fcm_credentials_file": creds_path,
                                                 "fcm_endpoint": "http://127.0.0.1:18552",
                                                 "fcm_token_url": "http://127.0.0.1:18552/token"})
            fcm.tokens.drop()
            out["fcm_client_per_s"] = rate(n, lambda i: fcm.send(fcm_settings, f"tok{i}", PAYLOAD).status)

            # Full delivery path: one stored push, n devices (one task's work each).
            db.connect(settings)
            r = make_redis(settings)
            for name, platform, s in (("webpush", "webpush", settings), ("fcm", "fcm", fcm_settings)):
                user = support.unique("bench")
                keys = []
                for i in range(n + 1):
                    own = dict(sub, endpoint=f"{sub['endpoint']}/{i}")  # one endpoint per device
                    store.register_device(user, f"d{i}", platform, None if platform == "webpush" else f"t{i}",
                                          own if platform == "webpush" else None, timeutil.now())
                    keys.append(PushDevice.key(user, f"d{i}"))
                note = Notification(id=support.unique("n"), user_id=user, kind="message", conversation_id="c",
                                    created_at=timeutil.utc_datetime(timeutil.now()), push=PAYLOAD)
                note.save(force_insert=True)
                ctx = Context(settings=s, redis=r, emit=lambda *a, **k: None, source="realtime/bench")
                print(f"{name}: {n} devices registered", file=sys.stderr, flush=True)
                out[f"{name}_delivery_per_s"] = rate(n, lambda i: delivery.deliver(ctx, note.id, keys[i]))
                PushDevice.objects(user_id=user).delete()
        finally:
            fcm_proc.kill()
            web.kill()
    return out


def latency(samples: int) -> dict:
    r = make_redis(support.SETTINGS)
    service = push_servers.WebPushService().start()
    alice = support.Client(support.EDGE1, user=support.unique("alice"))
    results = []
    try:
        for _ in range(samples):
            bob = support.unique("bob")
            conv = support.make_conversation([alice.user, bob])
            sub = push_servers.Subscriber(service.endpoint())
            store.register_device(bob, "web", "webpush", None, sub.subscription(), timeutil.now())
            assert not connections.is_connected(r, bob)
            path = sub.endpoint[len(service.url):]
            ack = alice.call("message_send", {"conversation_id": conv, "client_msg_id": support.unique("k"), "body": "latency"})
            acked = time.time()
            assert ack["ok"], ack
            [req] = service.wait(lambda q: q["path"] == path, timeout=10)
            results.append((req["at"] - acked) * 1000)
    finally:
        alice.close()
        service.stop()
    results.sort()
    pick = lambda q: results[min(len(results) - 1, int(q * len(results)))]  # noqa: E731
    return {"samples": len(results), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": results[-1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=100, help="messages for the ack-to-push latency")
    args = parser.parse_args()
    figures = {"throughput": throughput(args.pushes)}
    if args.latency:
        figures["ack_to_push"] = latency(args.latency)
    print(json.dumps(figures, indent=2, default=lambda v: round(v, 1)))


if __name__ == "__main__":
    main()
