"""Calls and notifications together: a missed call notifies the callee (PROTOCOL §8, §10)."""
from tests import support
from tests.support import unique


def test_unanswered_call_gives_the_connected_callee_a_call_missed_notification(clients):
    alice, bob = unique("alice"), unique("bob")
    conv = support.make_conversation([alice, bob], kind="direct")
    a = clients(support.EDGE1, user=alice)
    b = clients(support.EDGE2, user=bob)
    call_id = a.call("call_initiate", {"conversation_id": conv, "media": "audio"})["call_id"]
    assert b.wait_for("call_incoming")["call_id"] == call_id
    timeout = support.SETTINGS.call_ring_timeout_s + 10
    assert a.wait_for("call_ended", timeout=timeout)["reason"] == "no_answer"
    note = b.wait_for("notification", lambda n: n.get("kind") == "call_missed", timeout=10)
    assert note["conversation_id"] == conv
    assert note["data"]["call_id"] == call_id
    assert a.received("notification") == []  # the caller missed nothing
