"""Signaling messages/s one edge node relays (issue #6): answered 1:1 calls on one
node, every caller trickling ICE candidates (`call_signal`) to its callee, at a
per-socket rate under the 50/s limit, for a few seconds per load level.

Loopback only and bounded (at most 200 calls and 10 s per level). Run in the
stack's network namespace:

    $NS bin/with-env .venv/bin/python -m bench.signaling_rate --edge http://127.0.0.1:5001 \
        --calls 20,60,120 --rate 45 --seconds 5

Prints one JSON line per level: offered and delivered signals/s, acks refused,
and the relay latency (caller emit to callee receipt) p50/p99 in ms. The load
generator is Node's socket.io-client (bench/signaling_rate.js), so the client
side is not the bottleneck a Python client would be.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess

from tests import support

MAX_CALLS = 200
MAX_SECONDS = 10.0
JS = support.ROOT / "bench" / "signaling_rate.js"


def run_level(edge: str, calls: int, rate: float, seconds: float) -> dict:
    pairs = []
    for _ in range(calls):
        caller, callee = support.unique("bench-caller"), support.unique("bench-callee")
        pairs.append({
            "conversation_id": support.make_conversation([caller, callee], kind="direct"),
            "caller_token": support.token(caller), "callee_token": support.token(callee),
            "callee_id": callee,
        })
    plan = {"edge": edge, "pairs": pairs, "rate_per_socket": rate, "duration_s": seconds}
    proc = subprocess.run([shutil.which("node") or "node", str(JS)], input=json.dumps(plan),
                          capture_output=True, text=True, timeout=seconds + 120)
    line = (proc.stdout.strip().splitlines() or ["{}"])[-1]
    result = json.loads(line)
    if proc.returncode != 0:
        result.setdefault("error", proc.stderr[-2000:])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", default=support.EDGE1)
    parser.add_argument("--calls", default="20,60,120", help="comma list of concurrent calls per level")
    parser.add_argument("--rate", type=float, default=45.0, help="signals/s per caller (limit: 50)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    seconds = min(args.seconds, MAX_SECONDS)
    for calls in (min(int(c), MAX_CALLS) for c in args.calls.split(",")):
        print(json.dumps(run_level(args.edge, calls, args.rate, seconds)), flush=True)


if __name__ == "__main__":
    main()
