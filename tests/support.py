"""Helpers for tests against the running stack (real Redis, Kafka, FerretDB/MongoDB,
real edge nodes, real Socket.IO clients)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from typing import Any, Callable

import engineio
import requests
import socketio

from realtime import auth, db, timeutil
from realtime.models import Conversation
from realtime.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
STACK_ENV_FILE = ROOT / "var" / "stack.env"
# The stack's supervisord, for tests that stop, pause or look up its programs.
SUPERVISORCTL = [str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(ROOT / "supervisord.conf")]

EDGE1 = "http://127.0.0.1:5001"
EDGE2 = "http://127.0.0.1:5002"
BALANCER = "http://127.0.0.1:8080"
FLOWER = "http://127.0.0.1:5555"

# How long a test waits for something that should happen "at once".
SHORT_WAIT_S = 5.0


def stack_env() -> dict[str, str]:
    """The environment the stack's processes run with (var/stack.env over ours)."""
    env = dict(os.environ)
    if STACK_ENV_FILE.exists():
        for line in STACK_ENV_FILE.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            name, _, value = line.partition("=")
            name = name.removeprefix("export ").strip()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[name] = value
    return env


SETTINGS = Settings.from_env(stack_env())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def token(user_id: str, *, ttl_s: float = 3600, session_id: str | None = None,
          device_id: str | None = None, now: float | None = None, **extra) -> str:
    return auth.mint(SETTINGS, user_id, ttl_s=ttl_s, now=now if now is not None else time.time(),
                     session_id=session_id, device_id=device_id, extra=extra or None)


def supervisor_pid(program: str) -> int:
    """The pid of one of the stack's programs (e.g. "services:kafka"); 0 when it is not
    running or supervisord does not know it."""
    out = subprocess.run([*SUPERVISORCTL, "pid", program], capture_output=True, text=True, timeout=10).stdout.strip()
    return int(out) if out.isdigit() else 0


def make_conversation(members: list[str], kind: str = "group", conversation_id: str | None = None) -> str:
    db.connect(SETTINGS)
    conversation_id = conversation_id or unique("conv")
    Conversation(id=conversation_id, kind=kind, members=members,
                 created_at=timeutil.utc_datetime(time.time())).save(force_insert=True)
    return conversation_id


def eventually(check: Callable[[], Any], timeout: float = SHORT_WAIT_S, interval: float = 0.05,
               message: str = "condition not met") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message} within {timeout}s (last: {last!r})")


class _InOrderEngineIOClient(engineio.Client):
    """python-engineio's client hands every received message to a thread of its own, so two
    messages can reach the handlers in another order than they arrived in, and a test of the
    server's ordering would fail on the client's scheduling. This one dispatches messages on
    its read loop, in arrival order (handlers here only record)."""

    def _trigger_event(self, event, *args, **kwargs):
        if event == "message":
            kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)


class _InOrderSocketIOClient(socketio.Client):
    def _engineio_client_class(self):
        return _InOrderEngineIOClient


class Client:
    """A python-socketio client that records every event it receives, in arrival order."""

    def __init__(self, url: str = EDGE1, *, user: str | None = None, auth_data: dict | None = None,
                 transports: list[str] | None = None, device_id: str | None = None,
                 connect: bool = True):
        self.url = url
        self.sio = _InOrderSocketIOClient(reconnection=False)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.cond = threading.Condition()
        self.connect_error: Any = None
        self.disconnected = threading.Event()
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("disconnect", lambda *a: self.disconnected.set())
        self.transports = transports or ["websocket"]
        if auth_data is None and user is not None:
            auth_data = {"token": token(user)}
            if device_id:
                auth_data["device_id"] = device_id
        self.auth_data = auth_data
        self.user = user
        if connect:
            self.connect()

    def connect(self) -> "Client":
        self.sio.connect(self.url, auth=self.auth_data, transports=self.transports, wait_timeout=5)
        return self

    def _record(self, event: str, *args: Any) -> None:
        with self.cond:
            self.events[event].append(args[0] if len(args) == 1 else args)
            self.cond.notify_all()

    def _on_connect_error(self, data: Any = None) -> None:
        self.connect_error = data

    def call(self, event: str, data: Any = None, timeout: float = SHORT_WAIT_S) -> Any:
        if data is None:
            return self.sio.call(event, timeout=timeout)
        return self.sio.call(event, data, timeout=timeout)

    def wait_for(self, event: str, predicate: Callable[[Any], bool] = lambda _: True,
                 timeout: float = SHORT_WAIT_S) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.events.get(event, []):
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{event!r} not received within {timeout}s; got {dict(self.events)}")
                self.cond.wait(remaining)

    def received(self, event: str) -> list[Any]:
        with self.cond:
            return list(self.events.get(event, []))

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


# Set by an autouse fixture (tests/conftest.py) when each test begins.
test_started_at = time.time()
# Producers stamp records with their own clock; the relay runs on this machine.
KAFKA_CLOCK_SLACK_S = 5.0


def seek_to_test_start(consumer, parts: list) -> None:
    """Position an assigned consumer at the first records produced since the running test
    began: a long-lived dev stack's topics hold far more than a test can scan in time
    (a benchmark run adds tens of thousands of presence events)."""
    since_ms = int((test_started_at - KAFKA_CLOCK_SLACK_S) * 1000)
    ends = consumer.end_offsets(parts)     # first: a record produced meanwhile is read
    found = consumer.offsets_for_times({part: since_ms for part in parts})
    for part in parts:
        # None: nothing that recent yet, so only what comes after the end.
        consumer.seek(part, ends[part] if found.get(part) is None else found[part].offset)


def start_edge(port: int, node_id: str, extra_env: dict[str, str] | None = None,
               wait: bool = True) -> subprocess.Popen:
    """Start an extra edge node process (for other settings or the gevent mode)."""
    env = stack_env()
    env.update({"EDGE_PORT": str(port), "EDGE_NODE_ID": node_id})
    env.update(extra_env or {})
    log = open(ROOT / "var" / "log" / f"test-{node_id}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "edge"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    if wait:
        try:
            eventually(lambda: proc.poll() is not None or http_ok(f"http://127.0.0.1:{port}/readyz"),
                       timeout=20, message=f"edge {node_id} ready")
        except AssertionError:
            proc.kill()
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"edge {node_id} exited with {proc.returncode}")
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
