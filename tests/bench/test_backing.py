"""bench/run.py's hold on the backing services during a run: every thread pinned, Redis's AOF
rewrites paused, and both undone after."""
import os
import subprocess
import sys

import pytest
import redis

from bench.run import AOF_REWRITE_SETTING, BackingServices, cpu_s, pause_aof_rewrites, resume_aof_rewrites
from tests import support

# A process with a few threads of its own (Redis, FerretDB and Kafka all have several).
THREADED_CHILD = """
import sys, threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def thread_masks(pid: int) -> dict[int, set[int]]:
    return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to tell a pin from no pin")
def test_pin_moves_every_thread_and_restore_gives_back_the_mask_it_had():
    child = subprocess.Popen([sys.executable, "-c", THREADED_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        before = thread_masks(child.pid)
        assert len(before) == 4 and all(len(m) >= 2 for m in before.values())
        target = min(os.sched_getaffinity(0))
        services = BackingServices({"redis": child.pid})

        services.pin(str(target))
        assert set(map(frozenset, thread_masks(child.pid).values())) == {frozenset({target})}

        services.restore()
        assert thread_masks(child.pid) == before
    finally:
        child.kill()
        child.wait()


def test_cpu_counts_redis_and_the_database_and_survives_a_process_gone():
    me = os.getpid()
    assert BackingServices({"redis": me}).cpu() == pytest.approx(cpu_s(me), abs=0.05)
    assert BackingServices({"kafka": me}).cpu() == 0.0          # Kafka is not on the measured paths
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert BackingServices({"ferretdb": gone.pid}).cpu() == 0.0


def test_aof_rewrites_are_paused_for_a_run_and_put_back_after():
    r = redis.Redis.from_url(support.SETTINGS.redis_url, decode_responses=True)
    setting = AOF_REWRITE_SETTING
    before = r.config_get(setting)[setting]
    previous = pause_aof_rewrites()
    try:
        assert previous == before
        assert r.config_get(setting)[setting] == "0"
    finally:
        resume_aof_rewrites(previous)
    assert r.config_get(setting)[setting] == before
