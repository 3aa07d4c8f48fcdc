"""edge.stopping: SIGTERM stops an edge process whatever greenthread it lands in."""
import signal
import subprocess
import sys
import time

import pytest

from tests import support
from tests.support import unique

# A node whose interpreter is inside a socket's handler when SIGTERM arrives. python-engineio
# runs every handler under a bare `except:` that logs and carries on, which is what swallowed
# the SystemExit the edge's old handler raised there.
HANDLER_HOLDS_THE_INTERPRETER = """
import eventlet
eventlet.monkey_patch()
import os, signal, sys, time
from edge import stopping

stopping.install("eventlet")

def handler():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        started = time.perf_counter()
        while time.perf_counter() - started < 0.3:
            pass   # no yield: Python runs the signal's handler in here
        print("handler returned", flush=True)
    except:  # noqa: E722  (as engineio.server.Server._trigger_event.run_handler)
        print("handler error:", repr(sys.exc_info()[1]), flush=True)

eventlet.spawn_n(handler)
try:
    while True:
        eventlet.sleep(0.05)
finally:
    print("main greenlet unwound", flush=True)
"""


def test_sigterm_in_a_handler_ends_the_main_greenlet_and_not_the_handler():
    proc = subprocess.run([sys.executable, "-c", HANDLER_HOLDS_THE_INTERPRETER], cwd=support.ROOT,
                          capture_output=True, text=True, timeout=20)
    assert proc.stdout.splitlines() == ["handler returned", "main greenlet unwound"], proc.stderr
    assert proc.returncode == 0


@pytest.mark.parametrize("async_mode, port", [("eventlet", 5051), ("gevent", 5052)])
def test_an_edge_node_stops_on_sigterm_and_its_clients_are_disconnected(clients, async_mode, port):
    proc = support.start_edge(port, unique("stopping"), {"EDGE_ASYNC_MODE": async_mode})
    try:
        client = clients(f"http://127.0.0.1:{port}", user=unique("alice"))
        assert client.sio.connected
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert client.disconnected.wait(5)
    finally:
        support.stop_process(proc)
