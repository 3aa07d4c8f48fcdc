"""The dev stack as a whole: supervisord's programs, Flower's API, the queues the workers share
and the FerretDB the stack builds."""
import subprocess
import time

import pytest
import requests

from realtime import taskqueue
from realtime.models import Conversation
from realtime.redis_client import make_redis
from tests import support

# Enough clears to keep the push worker busy for seconds (each reads the database).
BURST_OF_CLEARS = 1500


def test_every_program_runs():
    out = subprocess.run([*support.SUPERVISORCTL, "status"], capture_output=True, text=True).stdout
    for name in ("edge1", "edge2", "worker", "worker_outbox", "worker_push", "beat", "flower", "kafka_fanout"):
        line = next((l for l in out.splitlines() if f":{name} " in l), "")
        assert "RUNNING" in line, out


def test_flower_lists_the_running_workers():
    def listed():
        try:   # Flower may be starting or slow to ask the workers: try again
            return requests.get(f"{support.FLOWER}/api/workers?refresh=1", timeout=10).json()
        except (requests.RequestException, ValueError):
            return None
    workers = support.eventually(listed, timeout=30, message="Flower lists workers")
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


def test_a_burst_of_push_tasks_does_not_hold_up_read_receipts():
    """Push tasks have their own queue and worker (realtime.taskqueue.TASK_ROUTES): with
    a backlog of seconds of clears waiting there, a read is still aggregated by the next
    sweep on "default" and its receipt arrives at once."""
    sender, reader = support.unique("sender"), support.unique("reader")
    conv = support.make_conversation([sender, reader])
    a, b = support.Client(user=sender), support.Client(user=reader)
    r = make_redis(support.SETTINGS)
    push_queue = taskqueue.TASK_ROUTES[taskqueue.PUSH_CLEAR]["queue"]
    try:
        for c in (a, b):
            assert c.call("join_room", {"conversation_id": conv})["ok"]
        seq = a.call("message_send", {"conversation_id": conv, "client_msg_id": "m1", "body": "hi"})["message"]["seq"]
        # Clears for users with no device: each still reads the database, and this many
        # keep the push worker busy for seconds.
        for _ in range(BURST_OF_CLEARS):
            taskqueue.send(taskqueue.PUSH_CLEAR, [support.unique("nobody"), conv, None])
        b.call("message_read", {"conversation_id": conv, "seq": seq})
        read_at = time.monotonic()
        a.wait_for("read_receipt", lambda d: d["user_id"] == reader and d["seq"] == seq, timeout=10)
        waited = time.monotonic() - read_at
        still_queued = r.llen(push_queue)
        assert still_queued > 0, f"the burst was worked off before the receipt came ({waited:.1f} s): too small a test"
        assert waited < 3, f"the receipt took {waited:.1f} s with {still_queued} clears queued"
    finally:
        a.close()
        b.close()
        # Later tests expect an idle push worker.
        support.eventually(lambda: r.llen(push_queue) == 0, timeout=60, message="the burst of clears worked off")
