"""W2-W4 publisher for the edge: what a Celery worker does to reach a room,
the workers' write-only manager (realtime.fanout.RoutedRedisManager, python-socketio's
RedisManager routing per FANOUT_ROUTING) .emit(..., room="user:<id>"), open loop.

    python -m bench.publisher --channel bench-socketio --targets T.json --rate 2000 --duration 10 [--routing broadcast]
Prints one JSON line: {sent, rate, publisher}.
"""
from __future__ import annotations

import argparse
import json
import time

from realtime.fanout import RoutedRedisManager
from realtime.settings import FANOUT_ROUTING_MODES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--channel", required=True)
    ap.add_argument("--targets", required=True)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--event", default="message_new")
    ap.add_argument("--body-bytes", type=int, default=100)
    ap.add_argument("--routing", choices=FANOUT_ROUTING_MODES, default="rooms")
    args = ap.parse_args()
    targets = json.load(open(args.targets))
    mgr = RoutedRedisManager(args.redis, args.channel, routing=args.routing == "rooms")
    mgr.emit(args.event, {"warmup": True}, room="bench-none", namespace="/")
    sent = 0
    t0 = time.time()
    end = t0 + args.duration
    while True:
        now = time.time()
        if now >= end:
            break
        due = int((now - t0) * args.rate)
        while sent < due:
            room = targets[sent % len(targets)]
            head = f"{time.time() * 1000:.3f}|"
            mgr.emit(args.event, {"message": {"conversation_id": room, "sender_id": "publisher", "seq": sent,
                                              "body": head + "x" * max(0, args.body_bytes - len(head))}},
                     room=room, namespace="/")
            sent += 1
        time.sleep(0.001)
    elapsed = time.time() - t0
    print(json.dumps({"sent": sent, "rate": round(sent / elapsed), "publisher": f"python RoutedRedisManager(write_only, routing={args.routing})"}))


if __name__ == "__main__":
    main()
