"""Side-by-side benchmark of the edge against Node.js Socket.IO (issue 7).

    .venv/bin/python -m bench.run [--quick] [--only W1,W2] [--servers edge,node,edge-stock]

Runs inside the stack's network namespace (`make bench`, scripts/bench.sh). For each
server set it starts three processes pinned to the server CPU — two serving nodes and
an idle "observer" node that has no clients (its CPU is what a node spends on rooms and
users it has no member of) — and drives them with bench/node/loadgen.js (official
socket.io-client, websocket) pinned to the generator CPU. The stack's Redis, database and
Kafka are moved to the generator CPU for the run (BACKING_CPU below) and their CPU is
reported apart.

Server sets:
  edge        the edge as shipped (EDGE_FAST_BROADCAST default: on for eventlet)
  edge-stock  the same edge with EDGE_FAST_BROADCAST=off and FANOUT_ROUTING=broadcast
              (stock python-socketio delivery, one fan-out channel)
  edge-gevent the edge on gevent (EDGE_ASYNC_MODE=gevent: python-socketio's own delivery
              and websocket transport, as the fast path is built for eventlet; routing on)
  node        bench/node/server.js: socket.io 4.8 + @socket.io/redis-adapter

Writes bench/results/results.json, bench/results/report.md and bench/results/report.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid

import redis

from bench import purge, report
from tests import support

ROOT = pathlib.Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
RESULTS = ROOT / "bench" / "results"
GEN_CPU = os.environ.get("BENCH_GEN_CPU", "0")
SERVER_CPU = os.environ.get("BENCH_SERVER_CPU", "1")
# The stack's Redis, database and Kafka share the generator's CPU during a run (empty:
# left where the scheduler puts them). Unpinned, a Redis woken by a node's write often
# ran on the servers' CPU (the kernel wakes a task near its waker) and took it from the
# nodes: latency then depended on where Redis happened to run, and the edge, which
# talks to Redis on every connect, paid for Redis's work in its own latency. In a
# deployment these services run on machines of their own; their CPU is reported
# apart ("Redis + database CPU"), so what the edge makes them do stays visible.
BACKING_CPU = os.environ.get("BENCH_BACKING_CPU", GEN_CPU)
BACKING_PROGRAMS = ("services:redis", "services:ferretdb", "services:kafka")
EDGE_CHANNEL = "bench-socketio"
NODE_PREFIX = "bench-node"
PORTS = {"edge": (5101, 5102, 5103), "edge-stock": (5111, 5112, 5113), "edge-gevent": (5121, 5122, 5123),
         "node": (5201, 5202, 5203)}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Connections opened at once by the generator. The edge's Redis client pool holds 100
# connections (redis-py's default) and every connect/disconnect handler uses Redis, so
# 100 concurrent connects can exhaust it ("Too many connections"): stay below.
CONNECT_CONCURRENCY = 50
# Seconds of W2 e2e's sending phase (10 messages/s). Its p99 is over whole messages' fan-
# outs: with 10 s (100 messages) it was the slowest message or two, and one database
# stall moved it from 58 to 143 ms between runs; 30 s gives it 300 messages.
W2E2E_DURATION_S = 30
# Broadcasts in each of W2's paced phases at least (10/s then lasts 20 s). A phase's p99
# is over whole broadcasts' fan-outs (1,000 or 5,000 deliveries each): at 10/s for 6 s
# (60 broadcasts) it was the tail of the slowest broadcast alone, 37-50 ms from run to
# run for either server.
W2_MIN_BROADCASTS = 200
# Timings that `make test` shortens in var/stack.env (scripts/test.sh): bench edges run
# with the same ones whichever of `make up` / `make test` ran last. The deployment
# defaults, except a 1 s presence grace: a step's users are then announced offline
# before the next step measures (with the 10 s default, a step's thousands of offline
# announcements can fall into the next step's measured phases).
TEST_TIMINGS = ("PRESENCE_OFFLINE_GRACE_S", "PRESENCE_NODE_TIMEOUT_S", "TYPING_EXPIRY_S", "RECEIPT_WINDOW_S",
                "PUSH_COALESCE_S", "CALL_RING_TIMEOUT_S", "CALL_RECONNECT_GRACE_S", "AUTH_GRACE_S")
BENCH_PRESENCE_GRACE_S = "1"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ process accounting
def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def taskset(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if cpu else []


# ------------------------------------------------------------------ servers
class ServerSet:
    def __init__(self, kind: str):
        self.kind = kind
        self.ports = PORTS[kind]
        self.procs: list[subprocess.Popen] = []

    @property
    def routing(self) -> str:
        """FANOUT_ROUTING of an edge set: edge-stock keeps python-socketio's one channel."""
        return "broadcast" if self.kind == "edge-stock" else support.stack_env().get("FANOUT_ROUTING", "rooms")

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports[:2]]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        env = support.stack_env()
        logs = ROOT / "var" / "log"
        logs.mkdir(parents=True, exist_ok=True)
        for i, port in enumerate(self.ports, 1):
            log_file = open(logs / f"bench-{self.kind}{i}.log", "ab")
            if self.kind.startswith("edge"):
                e = {k: v for k, v in env.items() if k not in TEST_TIMINGS}
                e.update(EDGE_PORT=str(port), EDGE_NODE_ID=f"bench-{self.kind}{i}",
                         PRESENCE_OFFLINE_GRACE_S=BENCH_PRESENCE_GRACE_S,
                         EDGE_SOCKETIO_CHANNEL=EDGE_CHANNEL,
                         EDGE_FAST_BROADCAST="off" if self.kind == "edge-stock" else env.get("EDGE_FAST_BROADCAST", "auto"),
                         FANOUT_ROUTING=self.routing)
                if self.kind == "edge-gevent":
                    e["EDGE_ASYNC_MODE"] = "gevent"
                cmd = [*taskset(SERVER_CPU), sys.executable, "-m", "edge"]
            else:
                e = dict(env, BENCH_NODE_PREFIX=NODE_PREFIX)
                cmd = [*taskset(SERVER_CPU), "node", str(NODE_DIR / "server.js"), str(port), f"bench-node{i}"]
            self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=log_file, stderr=subprocess.STDOUT))
        for port, proc in zip(self.ports, self.procs):
            support.eventually(lambda: proc.poll() is not None or support.http_ok(f"http://127.0.0.1:{port}/readyz"),
                               timeout=30, message=f"{self.kind} on {port} ready")
            if proc.poll() is not None:
                raise RuntimeError(f"{self.kind} on {port} exited with {proc.returncode}")
        time.sleep(0.5)

    def stop(self) -> None:
        for proc in self.procs:
            support.stop_process(proc)
        self.procs = []

    def cpu(self) -> list[float]:
        return [cpu_s(p) for p in self.pids]

    def rss(self) -> list[int]:
        return [rss_bytes(p) for p in self.pids]


class BackingServices:
    """The stack's Redis, database and Kafka processes (supervisord's `services:`)."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids                          # program name -> pid
        self._masks: dict[int, set[int]] = {}     # pid -> its affinity before `pin`

    @classmethod
    def of_stack(cls) -> "BackingServices":
        pids = {}
        for program in BACKING_PROGRAMS:
            pid = support.supervisor_pid(program)
            if pid:
                pids[program.split(":", 1)[1]] = pid
        return cls(pids)

    def pin(self, cpus: str) -> None:
        """Every thread of every service onto `cpus` (e.g. "0"); `restore` undoes it."""
        target = {int(c) for c in cpus.split(",")}
        for pid in self.pids.values():
            try:
                self._masks.setdefault(pid, os.sched_getaffinity(pid))
            except ProcessLookupError:
                continue
            self._set_threads(pid, target)

    def restore(self) -> None:
        for pid, mask in self._masks.items():
            self._set_threads(pid, mask)
        self._masks = {}

    @staticmethod
    def _set_threads(pid: int, mask: set[int]) -> None:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            return
        for tid in tids:
            try:
                os.sched_setaffinity(tid, mask)
            except (ProcessLookupError, PermissionError):
                pass   # a thread gone since the listing

    def cpu(self) -> float:
        """CPU seconds used so far by Redis and the database (Kafka is not on these paths)."""
        total = 0.0
        for name in ("redis", "ferretdb"):
            pid = self.pids.get(name)
            if pid is not None:
                try:
                    total += cpu_s(pid)
                except FileNotFoundError:
                    pass
        return total


BACKING: BackingServices | None = None


def backing_cpu() -> float:
    return BACKING.cpu() if BACKING is not None else 0.0


# ------------------------------------------------------------------ load generator
class LoadGen:
    def __init__(self, spec: dict, tag: str):
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.spec_path = RESULTS / f"spec-{tag}.json"
        self.spec_path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen([*taskset(GEN_CPU), "node", str(NODE_DIR / "loadgen.js"), str(self.spec_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=NODE_DIR)

    def next(self, timeout: float = 300) -> dict:
        result: dict = {}

        def read():
            line = self.proc.stdout.readline()
            result["line"] = line

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        line = result.get("line")
        if not line:
            self.kill()
            raise RuntimeError("load generator produced no output (timeout or exit)")
        msg = json.loads(line)
        if msg.get("phase") == "error":
            raise RuntimeError(f"load generator: {msg.get('error')}")
        return msg

    def say(self, word: str) -> None:
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.spec_path.unlink(missing_ok=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------ fixtures
class Users:
    def __init__(self):
        self.run = uuid.uuid4().hex[:6]
        self._tokens: dict[str, str] = {}

    def user(self, i: int) -> str:
        return f"bench-{self.run}-u{i}"

    def token(self, i: int) -> str:
        uid = self.user(i)
        tok = self._tokens.get(uid)
        if tok is None:
            tok = self._tokens[uid] = support.token(uid, ttl_s=4 * 3600)
        return tok


def conversations(users: Users, groups: list[list[int]]) -> list[str]:
    from realtime import db, timeutil
    from realtime.models import Conversation

    db.connect(support.SETTINGS)
    now = timeutil.utc_datetime(time.time())
    docs = [Conversation(id=f"bench-{users.run}-c{uuid.uuid4().hex[:8]}", kind="group",
                         members=[users.user(i) for i in g], created_at=now) for g in groups]
    Conversation.objects.insert(docs, load_bulk=False)
    return [d.id for d in docs]


def purge_bench_data(which: str) -> None:
    """The users, conversations and messages of bench runs, out of the stack (bench.purge)."""
    from mongoengine.connection import get_db

    from realtime import db
    from realtime.redis_client import make_redis

    started = time.monotonic()
    try:
        db.connect(support.SETTINGS)
        removed = purge.purge(make_redis(support.SETTINGS), get_db())
    except Exception as exc:  # the run's own results matter more; the next run tries again
        log(f"could not remove the bench data {which}: {exc!r}")
        return
    log(f"removed the bench data {which} in {time.monotonic() - started:.1f}s: {removed}")


def clients(users: Users, servers: ServerSet, indices, join: dict[int, list[str]] | None = None,
            node_of=None) -> list[dict]:
    out = []
    for k, i in enumerate(indices):
        url = servers.urls[node_of(i) if node_of else k % 2]
        out.append({"url": url, "token": users.token(i), "join": (join or {}).get(i, [])})
    return out


# ------------------------------------------------------------------ workloads
def w1_idle(servers: ServerSet, users: Users, n: int) -> dict:
    rss0 = sum(servers.rss()[:2])
    spec = {"mode": "idle", "clients": clients(users, servers, range(n)), "connect_concurrency": CONNECT_CONCURRENCY}
    # CPU per connect: what the two serving processes spent from the first connect to the
    # last (/proc accounting; steadier than connect latency, which both servers' run-to-run
    # noise moves by up to 2x).
    storm_cpu0, backing0 = servers.cpu(), backing_cpu()
    gen = LoadGen(spec, f"w1-{servers.kind}-{n}")
    try:
        connected = gen.next(timeout=600)
        storm_cpu = [b - a for a, b in zip(storm_cpu0, servers.cpu())]
        storm_backing = backing_cpu() - backing0
        time.sleep(3)
        rss1 = sum(servers.rss()[:2])
        cpu0 = servers.cpu()
        time.sleep(5)
        idle_cpu = [b - a for a, b in zip(cpu0, servers.cpu())]
        gen.say("stop")
        done = gen.next()
    finally:
        gen.finish()
    conns = max(1, connected["connected"])
    return {"clients": n, "connected": connected["connected"], "connect_errors": connected["connect_errors"],
            "connect_s": connected["connect_s"], "connect_p50_ms": connected["connect"]["p50_ms"],
            "connect_generator_cpu_pct": connected.get("connect_generator_cpu_pct"),
            "connect_p99_ms": connected["connect"]["p99_ms"],
            "rss_before_mb": round(rss0 / 2**20, 1), "rss_after_mb": round(rss1 / 2**20, 1),
            "kb_per_connection": round((rss1 - rss0) / conns / 1024, 1),
            "connect_cpu_us": round(sum(storm_cpu[:2]) / conns * 1e6),
            "backing_cpu_us_per_connect": round(storm_backing / conns * 1e6),
            "idle_cpu_pct_5s": round(sum(idle_cpu[:2]) / 5 * 100, 1),
            "generator_cpu_s": done.get("generator_cpu_s")}


def run_room(servers: ServerSet, spec: dict, tag: str) -> dict:
    gen = LoadGen(spec, tag)
    phases = []
    try:
        connected = gen.next(timeout=900)
        while True:
            msg = gen.next(timeout=300)
            if msg["phase"] == "phase_start":
                c0, k0, t0 = servers.cpu(), backing_cpu(), time.monotonic()
            elif msg["phase"] == "phase_end":
                dt = time.monotonic() - t0
                phases.append({"server_cpu_pct": [round((b - a) / dt * 100, 1) for a, b in zip(c0, servers.cpu())],
                               "backing_cpu_pct": round((backing_cpu() - k0) / dt * 100, 1)})
            elif msg["phase"] == "done":
                done = msg
                break
    finally:
        gen.finish()
    for extra, res in zip(phases, done["phases"]):
        res.update(extra)
        d = res["received"]
        # server CPU per delivery (serving nodes), microseconds
        busy = sum(extra["server_cpu_pct"][:2]) / 100 * res["window_s"]
        res["server_us_per_delivery"] = round(busy / d * 1e6, 2) if d else None
        res["backing_us_per_delivery"] = (round(extra["backing_cpu_pct"] / 100 * res["window_s"] / d * 1e6, 2)
                                          if d else None)
    return {"connected": connected["connected"], "connect_errors": connected["connect_errors"],
            "join_errors": connected["join_errors"], "connect_p99_ms": connected["connect"]["p99_ms"],
            "phases": done["phases"]}


def publish(servers: ServerSet, targets_file: pathlib.Path, rate: float, duration_s: float) -> dict:
    if servers.kind.startswith("edge"):
        pub = [*taskset(GEN_CPU), sys.executable, "-m", "bench.publisher", "--channel", EDGE_CHANNEL,
               "--routing", servers.routing]
    else:
        pub = [*taskset(GEN_CPU), "node", str(NODE_DIR / "emitter.js"), "--prefix", f"{NODE_PREFIX}-socket.io"]
    out = subprocess.run([*pub, "--targets", str(targets_file), "--rate", str(rate), "--duration", str(duration_s),
                          "--redis", support.SETTINGS.redis_url],
                         capture_output=True, text=True, timeout=duration_s + 60, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_publish(servers: ServerSet, spec_clients: list[dict], targets: list[str], per_target: int,
                phases: list[tuple[str, float, float]], tag: str) -> dict:
    """Emits from a worker-side publisher (no client, no database) to `targets` rooms,
    `per_target` recipients each, open loop: the workers' write-only manager
    (realtime.fanout.RoutedRedisManager) for the edge, @socket.io/redis-emitter for Node. One connection setup, then each
    phase (label, rate/s, seconds) in turn. Server CPU is net of each process's idle
    CPU measured just before the phase."""
    spec = {"mode": "listen", "listen_event": "message_new", "clients": spec_clients, "connect_concurrency": CONNECT_CONCURRENCY}
    gen = LoadGen(spec, tag)
    results = {}
    try:
        connected = gen.next(timeout=900)
        targets_file = RESULTS / f"targets-{tag}.json"
        targets_file.write_text(json.dumps(targets))
        for label, rate, duration_s in phases:
            time.sleep(1)
            b0, kb0, bt = servers.cpu(), backing_cpu(), time.monotonic()
            time.sleep(2)
            base = [(b - a) / (time.monotonic() - bt) for a, b in zip(b0, servers.cpu())]  # idle CPU s/s
            backing_base = (backing_cpu() - kb0) / (time.monotonic() - bt)
            c0, k0, t0 = servers.cpu(), backing_cpu(), time.monotonic()
            published = publish(servers, targets_file, rate, duration_s)
            expected = published["sent"] * per_target
            # drain: until the servers are idle again for 2 s (at most 25 s)
            prev, still, deadline = None, 0, time.monotonic() + 25
            while time.monotonic() < deadline:
                time.sleep(0.25)
                cur = servers.cpu()
                busy = prev is not None and any(b - a > 0.02 for a, b in zip(prev, cur))
                still = 0 if busy or prev is None else still + 1
                prev = cur
                if still >= 8:
                    break
            dt = time.monotonic() - t0
            used = [max(0.0, (b - a) - bb * dt) for a, b, bb in zip(c0, servers.cpu(), base)]
            # Redis's share includes the publisher's PUBLISH commands, the same for both servers.
            backing_used = max(0.0, backing_cpu() - k0 - backing_base * dt)
            gen.say("mark")
            mark = gen.next()
            while mark.get("phase") != "mark":
                mark = gen.next()
            sent, received = published["sent"], mark["received"]
            results[label] = {
                "offered_per_s": rate, "duration_s": duration_s, "published": sent,
                "publish_rate": published["rate"], "expected": expected, "received": received,
                "loss": max(0, expected - received),
                "loss_ratio": round(max(0, expected - received) / expected, 4) if expected else 0,
                "reorders": mark.get("reorders"), "latency": mark["latency"],
                "deliveries_per_s": mark.get("deliveries_per_s"), "window_s": mark.get("window_s"),
                "serving_nodes_cpu_pct": [round(u / dt * 100, 1) for u in used[:2]],
                "non_member_node_cpu_pct": round(used[2] / dt * 100, 2),
                "non_member_us_per_emit": round(used[2] / sent * 1e6, 2) if sent else None,
                "server_us_per_delivery": round(sum(used[:2]) / received * 1e6, 2) if received else None,
                "backing_cpu_pct": round(backing_used / dt * 100, 1),
                "backing_us_per_delivery": round(backing_used / received * 1e6, 2) if received else None,
                "generator_cpu_pct": mark.get("generator_cpu_pct"), "publisher": published.get("publisher")}
        gen.say("stop")
        gen.next()
        targets_file.unlink(missing_ok=True)
    finally:
        gen.finish()
    return {"clients": len(spec_clients), "connected": connected["connected"],
            "connect_p99_ms": connected["connect"]["p99_ms"], "phases": results}


def w2_e2e(servers: ServerSet, users: Users, members: int, rate: float, duration_s: float) -> dict:
    """Clients' own `message_send` to the big room (stored, outbox, then fanned out):
    the full path, bound by the database here (FerretDB on SQLite)."""
    conv = conversations(users, [list(range(members))])[0]
    join = {i: [conv] for i in range(members)}
    n = max(1, math.ceil(rate / 10))  # message_send is rate limited to 20/s per socket (PROTOCOL §11)
    phases = [{"label": f"message_send {rate:g}/s", "duration_s": duration_s, "drain_s": 15,
               "senders": [{"client": i, "conversation_id": conv, "rate": rate / n} for i in range(n)]}]
    spec = {"mode": "room", "clients": clients(users, servers, range(members), join),
            "connect_concurrency": CONNECT_CONCURRENCY, "body_bytes": 100, "phases": phases}
    return run_room(servers, spec, f"w2e2e-{servers.kind}-{members}")


def w2_big_room(servers: ServerSet, users: Users, members: int, flat_rate: float, duration_s: float) -> dict:
    """Broadcasts to one room of `members` over both nodes, from the publisher: 10/s,
    50/s, then flat out (offered far above what either server delivers)."""
    from realtime import keys
    conv = conversations(users, [list(range(members))])[0]
    room = keys.conversation_room(conv) if servers.kind.startswith("edge") else f"conv:{conv}"
    cl = clients(users, servers, range(members), {i: [conv] for i in range(members)})
    phases = [(f"{rate}/s", rate, max(duration_s, W2_MIN_BROADCASTS / rate)) for rate in (10, 50)]
    phases.append(("flat out", flat_rate, min(duration_s, 3)))
    return run_publish(servers, cl, [room], members, phases, f"w2-{servers.kind}-{members}")


def w3_small_rooms(servers: ServerSet, users: Users, n_clients: int, room_size: int, every_s: float,
                   duration_s: float) -> dict:
    """1,000 rooms of 5, every client's message every `every_s` s: emitted by the
    publisher (the rate through message_send is bound by the database, see W2 e2e),
    each room's members all on one node, plus an observer node with no member at all."""
    from realtime import keys
    rooms = n_clients // room_size
    groups = [list(range(r * room_size, (r + 1) * room_size)) for r in range(rooms)]
    convs = conversations(users, groups)
    join = {i: [convs[i // room_size]] for i in range(n_clients)}
    node_of = lambda i: (i // room_size) % 2  # noqa: E731
    targets = [keys.conversation_room(c) if servers.kind.startswith("edge") else f"conv:{c}" for c in convs]
    rate = n_clients / every_s
    label = f"{rooms} rooms of {room_size}, a message per client every {every_s:g} s ({rate:g}/s)"
    return run_publish(servers, clients(users, servers, range(n_clients), join, node_of), targets, room_size,
                       [(label, rate, duration_s)], f"w3-{servers.kind}")


def w4_targeted(servers: ServerSet, users: Users, n_users: int, rate: float, duration_s: float) -> dict:
    targets = [f"user:{users.user(i)}" for i in range(n_users)]
    return run_publish(servers, clients(users, servers, range(n_users)), targets, 1,
                       [(f"{rate:g} emits/s to single users", rate, duration_s)], f"w4-{servers.kind}")


def w5_relay(events: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.relay_throughput", "--events", str(events)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout[out.stdout.index("{"):])


# ------------------------------------------------------------------ main
def machine() -> dict:
    load = open("/proc/loadavg").read().split()[:3]
    return {"loadavg": [float(x) for x in load], "cpus": os.cpu_count(), "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "python": platform.python_version(),
            "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
            "generator_cpu": GEN_CPU, "server_cpu": SERVER_CPU, "backing_cpu": BACKING_CPU}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="W1,W2,W2e2e,W3,W4,W5")
    ap.add_argument("--servers", default="edge,node,edge-stock")
    ap.add_argument("--w1", default="1000,5000,10000", help="W1 connection counts")
    ap.add_argument("--w2", default="1000,5000", help="W2 room sizes")
    ap.add_argument("--w2-flat-rate", type=float, default=300,
                    help="W2 flat out: broadcasts/s offered to a 1,000-member room (scaled by 1000/members)")
    ap.add_argument("--stock-w2", default="1000", help="W2 room sizes for edge-stock")
    ap.add_argument("--stock-w1", default="1000", help="W1 connection counts for edge-stock")
    ap.add_argument("--w2e2e-members", type=int, default=1000)
    ap.add_argument("--w3-clients", type=int, default=5000)
    ap.add_argument("--w3-every", type=float, default=5.0)
    ap.add_argument("--w4-users", type=int, default=2000)
    ap.add_argument("--w4-rate", type=float, default=2000)
    ap.add_argument("--w5-events", type=int, default=20000)
    ap.add_argument("--stock-only", default="W1,W2,W4", help="workloads also run on edge-stock")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every workload this many times, the servers alternated, and report medians")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    global BACKING
    BACKING = BackingServices.of_stack()
    # A stopped run (SIGTERM too, not only Ctrl-C) still gives the services their CPUs back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    purge_bench_data("left by earlier runs")
    if BACKING_CPU:
        BACKING.pin(BACKING_CPU)
    aof_rewrite_percentage = pause_aof_rewrites()
    try:
        run_all(args, out_dir)
    finally:
        resume_aof_rewrites(aof_rewrite_percentage)
        BACKING.restore()
        purge_bench_data("of this run")


# Redis rewrites its append-only file in a child process each time the file has doubled,
# which a W1 storm of the edge (registry, presence) does in seconds. The child inherits
# Redis's CPU, the generator's (BACKING_CPU), and takes it for about a second: every
# connect the generator had in flight then waits, whichever server it measures, and the
# child's CPU is not in "Redis + database CPU" (another process). Measured (W1 10,000,
# edge, 07:24 UTC 2026-11-27): the 1 % slowest connects, 430-440 ms against a median of
# 76, all began while a rewrite's child ran. Appends and their fsyncs go on as usual.
AOF_REWRITE_SETTING = "auto-aof-rewrite-percentage"


def pause_aof_rewrites() -> str | None:
    """Turn off Redis's automatic AOF rewrites for the run; returns the setting to put back."""
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    try:
        previous = r.config_get(AOF_REWRITE_SETTING).get(AOF_REWRITE_SETTING)
        r.config_set(AOF_REWRITE_SETTING, 0)
        return previous
    except redis.RedisError as exc:   # CONFIG renamed or refused (a managed Redis): leave it
        log(f"left Redis's AOF rewrites on: {exc}")
        return None


def resume_aof_rewrites(previous: str | None) -> None:
    if previous is None:
        return
    try:
        redis.Redis.from_url(support.SETTINGS.redis_url).config_set(AOF_REWRITE_SETTING, previous)
    except redis.RedisError as exc:
        log(f"could not put Redis's {AOF_REWRITE_SETTING} back to {previous}: {exc}")


def run_all(args, out_dir: pathlib.Path) -> None:
    only = set(args.only.split(","))
    stock_only = set(args.stock_only.split(","))
    results: dict = {"machine_start": machine(), "args": vars(args), "servers": {}, "repeat": args.repeat,
                     "backing_services": sorted(BACKING.pids) if BACKING is not None else []}
    runs: dict[str, list[dict]] = {}

    # With --repeat, whole rounds over the servers (edge, node, edge, node, ...), so that
    # a slow spell of the machine falls on both rather than on one server's runs.
    for kind in [k for _ in range(args.repeat) for k in args.servers.split(",")]:
        users = Users()
        res: dict = {}
        runs.setdefault(kind, []).append(res)
        todo = only & stock_only if kind == "edge-stock" else only

        def fresh():
            s = ServerSet(kind)
            s.start()
            return s

        def step(name, fn):
            log(f"{kind}: {name}")
            servers = fresh()
            try:
                return fn(servers)
            except Exception as exc:  # keep going: one failed step must not lose the others
                log(f"{kind}: {name} failed: {exc!r}")
                return {"error": repr(exc)}
            finally:
                servers.stop()

        if "W1" in todo:
            w1 = args.stock_w1 if kind == "edge-stock" else args.w1
            # Users of their own per size: none was seen before, so every connect makes the
            # user's presence change to online (the heaviest case, and the same in every run;
            # reused users' presence would depend on how long ago the previous size ended).
            res["W1"] = [step(f"W1 {n}", lambda s, n=n: w1_idle(s, Users(), n)) for n in map(int, w1.split(","))]
        if "W2" in todo:
            sizes = args.stock_w2 if kind == "edge-stock" else args.w2
            res["W2"] = {str(m): step(f"W2 {m}", lambda s, m=m: w2_big_room(
                s, users, m, args.w2_flat_rate * 1000 / m, 4 if args.quick else 6)) for m in map(int, sizes.split(","))}
        if "W2e2e" in todo:
            res["W2e2e"] = step("W2 e2e", lambda s: w2_e2e(
                s, users, args.w2e2e_members, 10, 5 if args.quick else W2E2E_DURATION_S))
        if "W3" in todo:
            res["W3"] = step("W3", lambda s: w3_small_rooms(s, users, args.w3_clients, 5, args.w3_every,
                                                          10))
        if "W4" in todo:
            res["W4"] = step("W4", lambda s: w4_targeted(s, users, args.w4_users, args.w4_rate, 5 if args.quick else 8))
        results["servers"][kind] = res if args.repeat == 1 else report.median_of_runs(runs[kind])
        if args.repeat > 1:
            results["runs"] = runs
        json_path = out_dir / "results.json"
        json_path.write_text(json.dumps(results, indent=2))
    if "W5" in only:
        # W5 measures one relay worker against its producer's ceiling, not one server
        # against another: the services get their CPUs back first. Pinned with Redis on
        # one CPU, the broker was the limit (librdkafka's relay: 12.0k events/s pinned
        # against 22-24k unpinned, 16:28 UTC 2026-11-27).
        BACKING.restore()
        log("W5 relay")
        results["W5"] = w5_relay(args.w5_events)
    results["machine_end"] = machine()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    md = report.markdown(results)
    (out_dir / "report.md").write_text(md)
    report.png(results, out_dir / "report.png")
    print(md)


if __name__ == "__main__":
    main()
