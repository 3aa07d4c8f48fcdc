"""Presence under a connect storm (issue #3): N users connect at once across the
two edge nodes while W watchers, subscribed to all of them, wait to be told.

Clients are a minimal asyncio WebSocket + Engine.IO v4 / Socket.IO v5 client
(stdlib only: python-socketio clients cost a thread each, aiohttp is not
installed), so one process holds thousands of sockets. Loopback only.

Reports:
  - connect: time until every socket got its Socket.IO CONNECT answer;
  - redis_correct: time until every user's announced presence in Redis is online;
  - all_told: time until every watcher received `user_presence` online for each
    of its targets (one event per subscriber per change);
  - then the same for the whole crowd disconnecting (offline after the grace);
  - Redis commands per connection (INFO commandstats before/after, whole server),
  - edge CPU during the storm (utime+stime from /proc/<pid>/stat, % of one core).

    bin/with-env .venv/bin/python -m bench.presence_storm --users 10000 --watchers 100
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time

import redis

from realtime import keys, timeutil
from realtime.models import Conversation
from tests import support

NODES = [("127.0.0.1", 5001, "app:edge1"), ("127.0.0.1", 5002, "app:edge2")]


class SioClient:
    """One Socket.IO client over a raw WebSocket (text frames only)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, port, token
        self.connected = asyncio.get_running_loop().create_future()
        self.acks: dict[int, asyncio.Future] = {}
        self.next_ack = 0
        self.on_event = None
        self.reader = self.writer = None
        self.task = None
        self.seen: list[str] = []

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")
        self.task = asyncio.create_task(self._read_loop())
        await self.connected

    def _send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def _read_loop(self) -> None:
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                data = await self.reader.readexactly(n)
                opcode = b0 & 0x0F
                if opcode == 8:
                    break
                if opcode == 1:
                    self._on_text(data.decode())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if not self.connected.done():
            self.connected.set_exception(RuntimeError("closed before connect"))

    def _on_text(self, text: str) -> None:
        self.seen.append(text[:60])
        kind = text[0]
        if kind == "0":                               # Engine.IO open
            self._send("40" + json.dumps({"token": self.token}))
        elif kind == "2":                             # Engine.IO ping
            self._send("3")
        elif kind == "4":                             # Engine.IO message: Socket.IO packet
            self._on_packet(text[1:])

    def _on_packet(self, packet: str) -> None:
        kind = packet[0]
        if kind == "0":
            if not self.connected.done():
                self.connected.set_result(True)
        elif kind == "4":
            if not self.connected.done():
                self.connected.set_exception(RuntimeError(f"refused: {packet}"))
        elif kind == "2" and self.on_event is not None:
            args = json.loads(packet[1:])
            self.on_event(args[0], args[1] if len(args) > 1 else None)
        elif kind == "3":
            i = 1
            while packet[i].isdigit():
                i += 1
            fut = self.acks.pop(int(packet[1:i]), None)
            if fut is not None and not fut.done():
                fut.set_result(json.loads(packet[i:])[0])

    async def call(self, event: str, data) -> dict:
        self.next_ack += 1
        fut = asyncio.get_running_loop().create_future()
        self.acks[self.next_ack] = fut
        self._send(f"42{self.next_ack}" + json.dumps([event, data]))
        return await asyncio.wait_for(fut, 30)

    async def close(self) -> None:
        if self.writer is not None:
            try:
                self._send("41")
                self.writer.close()
            except Exception:
                pass
        if self.task is not None:
            self.task.cancel()


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:   # the node died (and was restarted): the run is void
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def edge_pids() -> list[int]:
    return [support.supervisor_pid(program) for _, _, program in NODES]


def total_redis_calls(r: redis.Redis) -> int:
    return sum(v.get("calls", 0) for k, v in r.info("commandstats").items())


async def wait_until(check, timeout: float, interval: float = 0.05) -> float | None:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter()
        await asyncio.sleep(interval)
    return None


def all_announced(r: redis.Redis, users: list[str], status_ok) -> bool:
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.hget(keys.presence(u), "announced")
    return all(raw and status_ok(json.loads(raw)["status"]) for raw in pipe.execute())


async def run(args) -> dict:
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    run_id = support.unique("storm")
    users = [f"{run_id}-u{i}" for i in range(args.users)]
    watchers = [f"{run_id}-w{i}" for i in range(args.watchers)]
    per = -(-args.users // args.watchers)
    targets = {w: users[i * per:(i + 1) * per] for i, w in enumerate(watchers)}
    # One conversation per watcher with its targets: what authorizes the subscriptions.
    support.make_conversation([watchers[0]])  # connects the database
    now = timeutil.utc_datetime(time.time())
    Conversation._get_collection().insert_many(
        [{"_id": f"{w}-conv", "kind": "group", "members": [w, *t], "created_at": now} for w, t in targets.items()])
    tokens = {u: support.token(u) for u in users + watchers}

    told: dict[str, dict[str, str]] = {w: {} for w in watchers}
    watcher_clients = []
    for i, w in enumerate(watchers):
        host, port, _ = NODES[i % 2]
        c = SioClient(host, port, tokens[w])

        def on_event(event, data, seen=told[w]):
            if event == "user_presence":
                seen[data["user_id"]] = data["status"]
        c.on_event = on_event
        await c.connect()
        for chunk in range(0, len(targets[w]), 500):
            ack = await c.call("presence_subscribe", {"user_ids": targets[w][chunk:chunk + 500]})
            assert ack["ok"] and not ack["forbidden"], ack
        watcher_clients.append(c)

    def everyone_told(status):
        return all(all(told[w].get(u) == status for u in targets[w]) for w in watchers)

    pids = edge_pids()
    cpu0 = [cpu_seconds(p) for p in pids]
    calls0 = total_redis_calls(r)
    sem = asyncio.Semaphore(args.concurrency)
    clients: list[SioClient] = []
    failures = 0

    async def one(i, u):
        nonlocal failures
        host, port, _ = NODES[i % 2]
        c = SioClient(host, port, tokens[u])
        async with sem:
            try:
                await asyncio.wait_for(c.connect(), 60)
                clients.append(c)
            except Exception:
                failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
    t_connected = time.perf_counter()
    t_redis = await wait_until(lambda: all_announced(r, users, lambda s: s == "online"), args.timeout, 0.2)
    t_told = await wait_until(lambda: everyone_told("online"), args.timeout)
    t_end = time.perf_counter()
    await asyncio.sleep(1.5)   # let trailing work (coalescing windows) finish before counting
    cpu1 = [cpu_seconds(p) for p in pids]
    calls1 = total_redis_calls(r)
    storm_wall = t_end - t0
    result = {
        "users": args.users, "watchers": args.watchers, "connected": len(clients), "failed": failures,
        "connect_s": round(t_connected - t0, 2),
        "redis_correct_s": round(t_redis - t0, 2) if t_redis else None,
        "all_told_s": round(t_told - t0, 2) if t_told else None,
        "redis_calls_per_connection": round((calls1 - calls0) / max(1, len(clients)), 1),
        "edge_cpu_s": [round(b - a, 2) for a, b in zip(cpu0, cpu1)],
        "edge_cpu_pct_of_core_during_storm": [round(100 * (b - a) / storm_wall, 1) for a, b in zip(cpu0, cpu1)],
    }

    # The crowd leaves: offline after PRESENCE_OFFLINE_GRACE_S, announced in batches.
    calls2 = total_redis_calls(r)
    t1 = time.perf_counter()
    await asyncio.gather(*(c.close() for c in clients))
    t_off_redis = await wait_until(lambda: all_announced(r, users, lambda s: s == "offline"),
                                   args.timeout + support.SETTINGS.presence_offline_grace_s, 0.2)
    t_off_told = await wait_until(lambda: everyone_told("offline"), args.timeout)
    result.update({
        "grace_s": support.SETTINGS.presence_offline_grace_s,
        "offline_redis_correct_s": round(t_off_redis - t1, 2) if t_off_redis else None,
        "offline_all_told_s": round(t_off_told - t1, 2) if t_off_told else None,
    })
    await asyncio.sleep(1.5)
    result["redis_calls_per_disconnection"] = round((total_redis_calls(r) - calls2) / max(1, len(clients)), 1)
    for c in watcher_clients:
        await c.close()
    Conversation._get_collection().delete_many({"_id": {"$in": [f"{w}-conv" for w in watchers]}})
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=500, help="handshakes in flight")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
