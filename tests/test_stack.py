"""The dev stack as a whole: supervisord's programs and Flower's API."""
import subprocess

import requests

from tests import support


def test_every_program_runs():
    out = subprocess.run([str(support.ROOT / ".venv/bin/supervisorctl"), "-c", str(support.ROOT / "supervisord.conf"),
                          "status"], capture_output=True, text=True).stdout
    for name in ("edge1", "edge2", "worker", "beat", "flower", "kafka_fanout"):
        line = next((l for l in out.splitlines() if f":{name} " in l), "")
        assert "RUNNING" in line, out


def test_flower_lists_the_running_workers():
    workers = support.eventually(
        lambda: requests.get(f"{support.FLOWER}/api/workers?refresh=1", timeout=10).json(), timeout=30,
        message="Flower lists workers")
    assert any(name.startswith("worker") for name in workers), workers
