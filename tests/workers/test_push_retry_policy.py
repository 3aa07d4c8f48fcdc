"""Delivery retry timing and the edge/worker import boundary."""
import subprocess
import sys

from tasks.push import RETRY_BASE_S, RETRY_CAP_S, backoff
from tests import support


def test_backoff_is_jittered_exponential_and_honours_retry_after():
    assert backoff(0, None, rng=lambda: 1.0) == RETRY_BASE_S
    assert backoff(3, None, rng=lambda: 1.0) == RETRY_BASE_S * 8
    assert backoff(3, None, rng=lambda: 0.5) == RETRY_BASE_S * 4  # full jitter
    assert backoff(30, None, rng=lambda: 1.0) == RETRY_CAP_S
    assert backoff(0, 7.0, rng=lambda: 1.0) == 7.0                 # never before Retry-After
    assert backoff(5, 1.0, rng=lambda: 1.0) == RETRY_BASE_S * 32  # the larger wins


def test_the_edge_never_imports_workers_or_tasks():
    code = ("import sys, edge.server, edge.handlers.push; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('workers', 'tasks')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=support.ROOT, capture_output=True, text=True,
                         env=support.stack_env())
    assert out.returncode == 0, out.stdout + out.stderr
