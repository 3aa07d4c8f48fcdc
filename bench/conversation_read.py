"""The membership read of a `message_send` in isolation: `conversations.check_member`
on one conversation of N members, in the database the stack uses (`MONGO_URL`).

What it measures is the database's cost of reading a conversation's document by `_id`
(FerretDB decodes the whole member list on every read, deploy/ferretdb/README.md), plus
pymongo's decoding; nothing of the edge. The conversation is made for the run and
removed afterwards.

    bin/with-env .venv/bin/python -m bench.conversation_read --members 2,1000,5000 --reads 500
"""
from __future__ import annotations

import argparse
import time
import uuid

from realtime import db
from realtime.actions import conversations
from realtime.models import Conversation
from realtime.settings import Settings


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def measure(members: int, reads: int) -> dict:
    conversation_id = f"bench-read-{uuid.uuid4().hex[:12]}"
    member_ids = [f"bench-user-{i:06d}" for i in range(members)]
    Conversation._get_collection().insert_one(
        {"_id": conversation_id, "kind": "group", "members": member_ids, "created_at": None})
    try:
        caller = member_ids[-1]
        conversations.check_member(conversation_id, caller)   # connection and first read
        took_ms = []
        for _ in range(reads):
            started = time.perf_counter()
            conversations.check_member(conversation_id, caller)
            took_ms.append((time.perf_counter() - started) * 1000)
    finally:
        Conversation._get_collection().delete_one({"_id": conversation_id})
    took_ms.sort()
    return {"members": members, "reads": reads, "p50_ms": percentile(took_ms, 0.50),
            "p99_ms": percentile(took_ms, 0.99), "min_ms": took_ms[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", default="2,1000,5000", help="comma-separated member counts")
    parser.add_argument("--reads", type=int, default=500)
    args = parser.parse_args()
    db.connect(Settings.from_env())
    for members in (int(n) for n in args.members.split(",")):
        row = measure(members, args.reads)
        print(f"{row['members']:>6} members: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
              f"min {row['min_ms']:.2f} ms ({row['reads']} reads)")


if __name__ == "__main__":
    main()
