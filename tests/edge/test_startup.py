"""The edge refuses unsafe settings at start (PROTOCOL §12)."""
import subprocess
import sys

import pytest

from realtime.settings import DEV_JWT_SECRET
from tests import support


@pytest.mark.parametrize("env", [
    {"DEV_MODE": "0", "JWT_SECRET": DEV_JWT_SECRET},
    {"DEV_MODE": "0", "JWT_SECRET": ""},
])
def test_edge_refuses_to_start_with_dev_or_no_secret_outside_dev_mode(env):
    full = support.stack_env()
    full.update(env)
    full.update({"EDGE_PORT": "5031", "EDGE_NODE_ID": "refused"})
    proc = subprocess.run([sys.executable, "-m", "edge"], cwd=support.ROOT, env=full,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "refusing to start" in proc.stderr
