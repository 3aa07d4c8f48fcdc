"""The official JavaScript socket.io-client, through the sticky load balancer."""
import json
import shutil
import subprocess

import pytest

from tests import support
from tests.support import unique

JS_DIR = support.ROOT / "tests" / "js"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_official_js_client_through_the_balancer(transport):
    if not (JS_DIR / "node_modules" / "socket.io-client").exists():
        pytest.fail("tests/js/node_modules is missing: scripts/install.sh installs it")
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob])
    proc = subprocess.run(
        [shutil.which("node") or "node", str(JS_DIR / "exchange.js"), support.BALANCER, transport, conv,
         support.token(alice), support.token(bob)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["authenticated"] == [alice, bob]
    assert out["engine_transport"] == transport
    assert out["joined"] is True
    assert out["ack"]["ok"] and out["ack"]["message"]["body"] == f"hello over {transport}"
    assert out["received"] == {"message": out["ack"]["message"]}
    assert out["reply"]["message"]["sender_id"] == bob
    assert out["unknown"]["error"]["code"] == "invalid_payload"
    assert out["refused"]["code"] == "auth_invalid"
