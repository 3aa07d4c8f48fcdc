"""Cross-node message_send -> message_new latency (PROTOCOL §4 delivery target).

Senders on node 1 (5001), one reader on node 2 (5002), python-socketio clients
over websocket, paced under the per-socket rate limit. Reports, in ms:
  send->receive: from the client's emit to the reader's receipt (one clock);
  ack->receive:  from the sender's ack to the reader's receipt (negative when the
                 message reached the other node before the ack came back).

    .venv/bin/python -m bench.message_latency --messages 1000
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from tests import support


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--rate", type=float, default=15.0, help="messages/s per sender")
    parser.add_argument("--sender-url", default=support.EDGE1)
    parser.add_argument("--reader-url", default=support.EDGE2)
    args = parser.parse_args()

    reader_id = support.unique("reader")
    sender_ids = [support.unique("sender") for _ in range(args.senders)]
    conv = support.make_conversation([reader_id, *sender_ids])
    received: dict[str, float] = {}
    done = threading.Event()
    reader = support.Client(args.reader_url, user=reader_id)

    def on_new(data):
        received[data["message"]["client_msg_id"]] = time.perf_counter()
        if len(received) >= args.messages:
            done.set()

    reader.sio.on("message_new", on_new)
    assert reader.call("join_room", {"conversation_id": conv})["ok"]
    senders = [support.Client(args.sender_url, user=s) for s in sender_ids]
    sent_at: dict[str, float] = {}
    acked_at: dict[str, float] = {}
    per_sender = args.messages // args.senders

    def run(idx, client):
        interval = 1.0 / args.rate
        start = time.perf_counter()
        for i in range(per_sender):
            cmid = f"{idx}-{i}"
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent_at[cmid] = time.perf_counter()
            ack = client.call("message_send", {"conversation_id": conv, "client_msg_id": cmid, "body": "x" * 100})
            acked_at[cmid] = time.perf_counter()
            assert ack["ok"], ack

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(senders)]
    t0 = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    total = per_sender * args.senders
    done.wait(10)
    elapsed = time.perf_counter() - t0
    lost = [k for k in sent_at if k not in received]
    send_recv = [(received[k] - sent_at[k]) * 1000 for k in sent_at if k in received]
    ack_recv = [(received[k] - acked_at[k]) * 1000 for k in sent_at if k in received]
    result = {
        "messages": total, "lost": len(lost), "lost_ids": lost[:10], "seconds": round(elapsed, 2),
        "send_to_receive_ms": {"p50": round(pct(send_recv, 50), 2), "p99": round(pct(send_recv, 99), 2),
                               "max": round(max(send_recv), 2), "mean": round(statistics.mean(send_recv), 2)},
        "ack_to_receive_ms": {"p50": round(pct(ack_recv, 50), 2), "p99": round(pct(ack_recv, 99), 2),
                              "max": round(max(ack_recv), 2)},
    }
    print(json.dumps(result, indent=2))
    reader.close()
    [c.close() for c in senders]


if __name__ == "__main__":
    main()
