"""Read receipts under load (PROTOCOL §7): `message_read` at a target rate from
many users over both edge nodes, aggregated by the stack's Celery workers.

Reports: reads/s actually sent and acknowledged, MongoDB writes/s after
aggregation (the workers' counter in Redis), read_receipt latency p50/p99 (from
the send of the read whose seq the receipt carries, to its arrival at the other
member, one clock), and the CPU of the Celery worker processes and edge nodes
(/proc/<pid>/stat) over the measured interval. Loopback only, bounded in time.

    bin/with-env .venv/bin/python -m bench.receipts_load --rate 2000 --users 1000 --seconds 10

Users are paired in two-member conversations; the load generator is one Node.js
process with the official socket.io-client (bench/receipts_load.js).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from realtime import keys
from realtime.models import Conversation, ReadState
from realtime.redis_client import make_redis
from tests import support

CLK_TCK = os.sysconf("SC_CLK_TCK")


def program_pids(name: str) -> list[int]:
    root = support.supervisor_pid(name)
    if not root:
        return []
    pids, todo = [], [root]
    while todo:  # the program and all its descendants (celery pool children)
        pid = todo.pop()
        pids.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as fh:
                todo += [int(p) for p in fh.read().split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def cleanup(plan: list[dict]) -> None:
    """Remove the run's conversations and read states (by _id: FerretDB scans otherwise)."""
    convs = sorted({p["conv"] for p in plan})
    for i in range(0, len(convs), 200):
        Conversation.objects(id__in=convs[i:i + 200]).delete()
    ids = [keys.pair(p["conv"], p["user"]) for p in plan]
    for i in range(0, len(ids), 200):
        ReadState._get_collection().delete_many({"_id": {"$in": ids[i:i + 200]}})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=2000.0, help="message_read per second, all users")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured interval")
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    if args.users % 2:
        sys.exit("--users must be even (two-member conversations)")

    users = [support.unique("reader") for _ in range(args.users)]
    plan = []
    for a, b in zip(users[0::2], users[1::2]):
        conv = support.make_conversation([a, b])
        Conversation.objects(id=conv).update_one(set__last_seq=10_000_000)
        plan += [{"user": a, "partner": b, "conv": conv, "token": support.token(a)},
                 {"user": b, "partner": a, "conv": conv, "token": support.token(b)}]
    cfg = {"urls": [support.EDGE1, support.EDGE2], "users": plan, "rate": args.rate,
           "warmup_s": args.warmup, "seconds": args.seconds}

    r = make_redis(support.SETTINGS)
    groups = {"celery workers": ["app:worker"], "edge nodes": ["app:edge1", "app:edge2"],
              "celery beat": ["app:beat"]}
    pids = {g: [p for name in names for p in program_pids(name)] for g, names in groups.items()}

    proc = subprocess.Popen(["node", str(support.ROOT / "bench" / "receipts_load.js")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(cfg))
    proc.stdin.close()
    result = None
    cpu0 = writes0 = t0 = cpu1 = writes1 = t1 = None
    for line in proc.stdout:
        msg = json.loads(line)
        print("load:", line.strip(), file=sys.stderr)
        if msg["phase"] == "measuring":
            t0 = time.monotonic()
            cpu0 = {g: cpu_seconds(p) for g, p in pids.items()}
            writes0 = int(r.hget(keys.READS_STATS, "mongo_writes") or 0)
            # The measured interval ends when the generator stops sending.
            time.sleep(args.seconds)
            t1 = time.monotonic()
            cpu1 = {g: cpu_seconds(p) for g, p in pids.items()}
            writes1 = int(r.hget(keys.READS_STATS, "mongo_writes") or 0)
        elif msg["phase"] in ("done", "error"):
            result = msg
    proc.wait(timeout=30)
    cleanup(plan)
    if not result or result["phase"] != "done" or t0 is None:
        sys.exit(f"load generator failed: {result}")
    span = t1 - t0
    report = {
        "target_reads_per_s": args.rate,
        "users": args.users,
        "reads_sent_per_s": round(result["sent"] / args.seconds, 1),
        "acks_ok": result["acks"], "acks_failed": result["nacks"], "ack_errors": result.get("errors"),
        "mongo_writes_per_s": round((writes1 - writes0) / span, 1),
        "read_receipt_latency_ms": {"p50": round(result["p50_ms"] or 0, 1), "p99": round(result["p99_ms"] or 0, 1),
                                    "max": round(result["max_ms"] or 0, 1), "count": result["receipts"]},
        "cpu_percent_of_one_core": {g: round(100 * (cpu1[g] - cpu0[g]) / span, 1) for g in pids},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
