"""Real browsers: two headless Chromium pages set up a WebRTC call through the
edge nodes (caller on 5001, callee on 5002) and exchange data-channel messages.
The proof that the signaling works for real clients (tests/js/call_browser.js)."""
import json
import os
import shutil
import subprocess

import pytest

from realtime.models import Call
from tests import support
from tests.support import unique

JS_DIR = support.ROOT / "tests" / "js"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def test_two_browsers_connect_a_call_and_talk_over_a_data_channel():
    if not (JS_DIR / "node_modules" / "playwright-core").exists():
        pytest.fail("tests/js/node_modules/playwright-core is missing: scripts/install.sh installs it")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium")
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    proc = subprocess.run(
        [shutil.which("node") or "node", str(JS_DIR / "call_browser.js"), support.EDGE1, support.EDGE2, conv,
         support.token(alice, device_id="alice-browser"), support.token(bob, device_id="bob-browser")],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    caller, callee = out["caller"], out["callee"]
    assert caller["callId"] == callee["callId"]
    assert "connectionState connected" in caller["log"] and "connectionState connected" in callee["log"]
    assert callee["got"] == f"ping from {alice}"
    assert caller["reply"] == f'pong to "ping from {alice}"'
    assert callee["incoming_from"] == {"user_id": alice, "device_id": "alice-browser"}
    assert out["hangup"] == {"ok": True}
    assert callee["ended"]["reason"] == "hangup" and callee["ended"]["ended_by"] == alice
    ms = caller["ms"]
    print(f"\ncall setup in Chromium {out.get('browser')}: initiate->answered {ms['answered']:.0f} ms, "
          f"initiate->connected {ms['connected']:.0f} ms, data channel round trip by "
          f"{ms['data_channel_round_trip']:.0f} ms")
    record = support.eventually(lambda: Call.objects(id=caller["callId"], end_reason="hangup").first())
    assert record.answered_at is not None
