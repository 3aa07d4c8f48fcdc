"""Disconnect hooks in batches (edge/disconnects.py): the batcher on its own (pure: an
injected hook, spawn and sleep), then a storm of sockets closing at once on a real edge
node with a deliberately small Redis pool.
"""
import asyncio
import logging

import redis

from bench.presence_storm import SioClient
from edge.disconnects import DisconnectBatcher
from edge.sessions import SocketSession
from realtime import connections, keys
from tests import support
from tests.support import unique

NODE = object()   # what the batcher hands each hook as `node`


class Harness:
    """A batcher whose drain runs when the test says (spawn only records it)."""

    def __init__(self, *hooks, batch_size=4, retry_delays_s=(0.25, 1.0)):
        self.hooks = list(hooks)
        self.spawned = []
        self.slept = []
        self.batcher = DisconnectBatcher(NODE, self.hooks, spawn=self.spawned.append, sleep=self.slept.append,
                                         batch_size=batch_size, retry_delays_s=retry_delays_s)

    def close(self, *sids):
        for sid in sids:
            self.batcher.submit(SocketSession(sid=sid, connected_at=0.0, user_id=f"user-of-{sid}"))

    def drain(self):
        spawned = list(self.spawned)
        self.spawned.clear()
        assert len(spawned) == 1, spawned
        spawned[0]()


class Recorder:
    """A hook that records the sids of each batch it is called with."""

    def __init__(self, fail_times=0, error=redis.ConnectionError("No connection available.")):
        self.batches = []
        self.fail_times = fail_times
        self.error = error

    def __call__(self, node, sessions):
        assert node is NODE
        self.batches.append([s.sid for s in sessions])
        if self.fail_times:
            self.fail_times -= 1
            raise self.error


def sids(n, prefix="s"):
    return [f"{prefix}{i}" for i in range(n)]


def test_closed_sockets_go_to_every_hook_in_bounded_batches_in_order():
    first, second = Recorder(), Recorder()
    h = Harness(first)
    h.hooks.append(second)              # hooks added after the batcher's creation take part
    h.close(*sids(10))
    h.drain()
    assert first.batches == [sids(10)[0:4], sids(10)[4:8], sids(10)[8:10]]
    assert second.batches == first.batches
    assert not h.batcher.queue and not h.batcher.draining
    h.close("late")                     # a new drain once the last one is over
    h.drain()
    assert first.batches[-1] == ["late"]


def test_sockets_closed_while_a_batch_runs_make_up_the_next_one_without_a_second_drain():
    seen = []
    h = Harness()

    def hook(node, sessions):
        seen.append([s.sid for s in sessions])
        if len(seen) == 1:
            h.close("t0", "t1")

    h.hooks.append(hook)
    h.close("s0")
    h.drain()
    assert seen == [["s0"], ["t0", "t1"]]
    assert h.spawned == []


def test_a_redis_error_is_retried_after_the_backoff(caplog):
    flaky, steady = Recorder(fail_times=2), Recorder()
    h = Harness(flaky, steady)
    h.close("s0", "s1")
    with caplog.at_level(logging.INFO, logger="edge.disconnects"):
        h.drain()
    assert flaky.batches == [["s0", "s1"]] * 3
    assert h.slept == [0.25, 1.0]
    assert steady.batches == [["s0", "s1"]]     # another hook's failure is not its retry
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "2 sockets at attempt 3" in caplog.text


def test_a_batch_is_given_up_after_the_retries_with_one_warning_and_the_next_batch_runs(caplog):
    broken = Recorder(fail_times=3)
    h = Harness(broken, batch_size=3, retry_delays_s=(0.1, 0.2))
    h.close(*sids(5))
    with caplog.at_level(logging.INFO, logger="edge.disconnects"):
        h.drain()
    assert broken.batches == [sids(3)] * 3 + [sids(5)[3:]]
    assert h.slept == [0.1, 0.2]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(caplog.records) == 1
    assert "gave up on 3 sockets after 3 attempts" in warnings[0].getMessage()
    assert "Traceback" not in caplog.text


def test_a_retry_gets_only_the_sessions_the_hook_left_undone():
    calls = []

    def hook(node, sessions):
        calls.append([s.sid for s in sessions])
        if len(calls) == 1:
            del sessions[0]             # finished with the first, then Redis failed
            raise redis.TimeoutError("Timeout reading from socket")

    h = Harness(hook)
    h.close("s0", "s1", "s2")
    h.drain()
    assert calls == [["s0", "s1", "s2"], ["s1", "s2"]]


def test_a_bug_in_a_hook_is_logged_once_not_retried_and_the_other_hooks_run(caplog):
    buggy, steady = Recorder(fail_times=1, error=KeyError("oops")), Recorder()
    h = Harness(buggy, steady)
    h.close("s0", "s1")
    with caplog.at_level(logging.INFO, logger="edge.disconnects"):
        h.drain()
    assert buggy.batches == [["s0", "s1"]] and h.slept == []
    assert steady.batches == [["s0", "s1"]]
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.ERROR
    assert "failed for 2 sockets" in caplog.records[0].getMessage()
    assert not h.batcher.draining


# --- a disconnect storm on a real edge node ----------------------------------------

STORM_PORT = 5023
STORM_TYPISTS = 300
TYPISTS_PER_CONVERSATION = 50
# Typists who keep a second socket, joined to the same conversation, on another node.
TYPISTS_KEEPING_A_SOCKET = 10
STORM_CALLS = 5
# The storm node's pool: two connections, waited on for 0.1 s at most, so that running
# the hooks of hundreds of sockets at once (as before batching) runs it dry.
STORM_NODE_ENV = {
    "REDIS_MAX_CONNECTIONS": "2",
    "REDIS_POOL_WAIT_S": "0.1",
    # Far beyond the test: typing that ends did so because its socket closed.
    "TYPING_EXPIRY_S": "60",
}
GRACE_S = support.SETTINGS.call_reconnect_grace_s
# Call timers fire from a 0.5 s beat sweep; allow for that and a loaded machine.
TIMER_SLACK_S = 4.0
LOG_LINES_OF_FAILURE = ("disconnect hook failed", "Timeout", "No connection available", "Traceback",
                        "could not unregister", "could not end typing", "disconnect batch")


def _typing(client, user_id, typing):
    return [e for e in client.received("user_typing") if e["user_id"] == user_id and e["typing"] is typing]


async def _connect_typists_and_callees(storm_url, typists, conversation_of, callees, start_calls):
    """Connect every socket of the storm node; the typists join and type, the callees
    answer the calls `start_calls` placed."""
    host, port = storm_url.removeprefix("http://").split(":")
    sockets = {u: SioClient(host, int(port), support.token(u)) for u in [*typists, *callees]}
    await asyncio.gather(*(s.connect() for s in sockets.values()))
    for u in typists:
        assert (await sockets[u].call("join_room", {"conversation_id": conversation_of[u]}))["ok"]
        assert (await sockets[u].call("typing_start", {"conversation_id": conversation_of[u]}))["ok"]
    call_ids = await asyncio.to_thread(start_calls)
    for callee, call_id in zip(callees, call_ids):
        assert (await sockets[callee].call("call_answer", {"call_id": call_id}))["ok"]
    return sockets


def _close_all_at_once(sockets):
    """A reset of every connection, as a load balancer restart does: no Socket.IO goodbye."""
    for s in sockets.values():
        s.writer.transport.abort()
        s.task.cancel()


def test_a_disconnect_storm_ends_typing_and_starts_call_graces_without_hook_failures(clients):
    node_id = unique("storm")
    storm_url = f"http://127.0.0.1:{STORM_PORT}"
    proc = support.start_edge(STORM_PORT, node_id, STORM_NODE_ENV)
    log_path = support.ROOT / "var" / "log" / f"test-{node_id}.log"
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    try:
        run = unique("st")
        watcher = f"{run}-watcher"
        typists = [f"{run}-t{i}" for i in range(STORM_TYPISTS)]
        conversation_of = {}
        for first in range(0, STORM_TYPISTS, TYPISTS_PER_CONVERSATION):
            group = typists[first:first + TYPISTS_PER_CONVERSATION]
            conv = support.make_conversation([watcher, *group])
            conversation_of.update((u, conv) for u in group)
        w = clients(support.EDGE1, user=watcher)
        for conv in set(conversation_of.values()):
            assert w.call("join_room", {"conversation_id": conv})["ok"]
        keeping = typists[:TYPISTS_KEEPING_A_SOCKET]
        for u in keeping:
            assert clients(support.EDGE2, user=u).call("join_room", {"conversation_id": conversation_of[u]})["ok"]

        callers = [f"{run}-c{i}" for i in range(STORM_CALLS)]
        callees = [f"{run}-d{i}" for i in range(STORM_CALLS)]
        caller_clients = [clients(support.EDGE1, user=c, device_id="c-phone") for c in callers]

        def start_calls():
            call_ids = []
            for caller, callee, client in zip(callers, callees, caller_clients):
                conv = support.make_conversation([caller, callee], kind="direct")
                ack = client.call("call_initiate", {"conversation_id": conv, "media": "audio"})
                assert ack["ok"], ack
                call_ids.append(ack["call_id"])
            return call_ids

        async def storm():
            sockets = await _connect_typists_and_callees(storm_url, typists, conversation_of, callees, start_calls)
            for client in caller_clients:
                await asyncio.to_thread(client.wait_for, "call_answered")
            await asyncio.to_thread(support.eventually, lambda: all(_typing(w, u, True) for u in typists),
                                    10, 0.05, "every typist announced")
            _close_all_at_once(sockets)

        asyncio.run(storm())

        support.eventually(lambda: not connections.of_node(r, node_id), message="the storm node's sockets unregistered")
        gone = [u for u in typists if u not in keeping]
        support.eventually(lambda: all(_typing(w, u, False) for u in gone), timeout=10,
                           message="typing ended for every typist whose last socket closed")
        # connection_lost comes only from a reconnect grace that ran out: it was started.
        for client in caller_clients:
            ended = client.wait_for("call_ended", timeout=GRACE_S + TIMER_SLACK_S)
            assert ended["reason"] == "connection_lost", ended
        # A typist with another socket in the conversation still types.
        assert not any(_typing(w, u, False) for u in keeping)
        assert all(r.zscore(keys.TYPING_DEADLINES, keys.pair(conversation_of[u], u)) is not None for u in keeping)
    finally:
        support.stop_process(proc)
    log = log_path.read_text(errors="replace")
    assert f"edge node {node_id} listening" in log
    failures = [line for line in log.splitlines() if any(m in line for m in LOG_LINES_OF_FAILURE)]
    assert not failures, failures[:5]
