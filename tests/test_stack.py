"""The dev stack as a whole: supervisord's programs and Flower's API."""
import subprocess

import pytest
import requests

from realtime.models import Conversation
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


def test_ferretdb_looks_documents_up_by_id_through_the_id_index():
    """deploy/ferretdb/sqlite-id-index.patch: unpatched, FerretDB 1.24's SQLite backend scans
    the whole table for every find, update and delete by _id."""
    conv = support.make_conversation([support.unique("u"), support.unique("u")])
    database = Conversation._get_collection().database
    plan = database.command("explain", {"find": "conversations", "filter": {"_id": conv}})
    if "ferretdbVersion" not in plan.get("serverInfo", {}):
        pytest.skip("the database is not FerretDB")
    steps = plan["queryPlanner"]["Plan"]
    assert any("USING INDEX" in step and step.rstrip().endswith("__id_ (<expr>=?)") for step in steps), steps
