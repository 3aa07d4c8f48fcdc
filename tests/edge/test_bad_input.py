"""Bad input gets the contract's error, changes nothing, and leaves the socket usable."""
import time

import socketio

from realtime.models import Message
from tests import support
from tests.support import unique

CONV = "__placeholder__"

# (event, payload, expected code). CONV is replaced by a real conversation id.
CASES = [
    ("join_room", {}, "invalid_payload"),
    ("join_room", {"conversation_id": 42}, "invalid_payload"),
    ("join_room", "a string", "invalid_payload"),
    ("join_room", {"conversation_id": "x" * 500}, "invalid_payload"),
    ("leave_room", {"conversation_id": None}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": "c", "body": 5}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": "c", "body": ""}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": ["c"], "body": "x"}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV, "body": "no client id"}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": "c", "body": "x" * 16385}, "too_large"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": "c", "body": "x" * 100_000}, "too_large"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": "c", "body": "x", "reply_to": 7}, "invalid_payload"),
    ("message_edit", {"message_id": 1, "body": "x"}, "invalid_payload"),
    ("message_edit", {"message_id": "m"}, "invalid_payload"),
    ("message_delete", {}, "invalid_payload"),
    ("sync", {"conversations": [CONV]}, "invalid_payload"),
    ("sync", {"conversations": {CONV: "7"}}, "invalid_payload"),
    ("sync", {"conversations": {CONV: -1}}, "invalid_payload"),
    ("history", {"conversation_id": CONV, "limit": "ten"}, "invalid_payload"),
    ("history", {"conversation_id": CONV, "before_seq": 0}, "invalid_payload"),
    ("authenticate", {"token": 12}, "auth_invalid"),
    ("no_such_event", {}, "invalid_payload"),
    ("message_send", {"conversation_id": CONV, "client_msg_id": "c", "body": "x", "pad": "y" * 70_000}, "too_large"),
]


def _fill(value, conv):
    if value == CONV:
        return conv
    if isinstance(value, dict):
        return {_fill(k, conv): _fill(v, conv) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, conv) for v in value]
    return value


def test_every_bad_payload_is_refused_and_changes_nothing(clients, nodes):
    user = unique("u")
    conv = support.make_conversation([user])
    c = clients(nodes[0], user=user)
    for event, payload, code in CASES:
        ack = c.call(event, _fill(payload, conv))
        assert ack["ok"] is False, (event, payload)
        assert ack["error"]["code"] == code, (event, payload, ack)
        assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]
        time.sleep(0.03)  # stay under the per-event rate limits
    assert Message.objects(conversation_id=conv).count() == 0
    assert c.sio.connected
    assert c.call("message_send", {"conversation_id": conv, "client_msg_id": "fine", "body": "ok"})["ok"]


def test_no_payload_and_extra_arguments(clients, nodes):
    c = clients(nodes[0], user=unique("u"))
    assert c.call("join_room")["error"]["code"] == "invalid_payload"
    got = []
    c.sio.emit("join_room", ({"conversation_id": "a"}, {"x": 1}), callback=lambda *a: got.append(a))
    support.eventually(lambda: got)
    assert got[0][0]["error"]["code"] == "invalid_payload"
    assert c.sio.connected


def test_rate_limit_then_disconnect_on_sustained_abuse(clients):
    import time as _time
    c = clients(support.EDGE1, user=unique("u"))
    acks = []
    n = 90
    started = _time.monotonic()
    # A payload refused before any I/O: the token is taken first, and a socket's events run
    # one after another, so a handler slower than 1/20 s (a database lookup on a big dev
    # database) would pace the burst to the refill rate and nothing would be refused.
    bad = "not an object"
    for _ in range(n):
        c.sio.emit("history", bad, callback=lambda ack: acks.append(ack))
    support.eventually(lambda: len(acks) == n)
    elapsed = _time.monotonic() - started
    codes = [a["error"]["code"] for a in acks]
    served = n - codes.count("rate_limited")
    # A burst of 40 (twice the 20/s rate) plus what refilled while the burst lasted.
    assert served <= 40 + 20 * elapsed + 1, (served, elapsed)
    if 40 + 20 * elapsed < n - 1:  # the burst outran the refill: some must be refused
        assert codes.count("rate_limited") >= 1
    assert c.sio.connected  # errors alone never disconnect
    # Sustained abuse: over 100 rate_limited answers within 10 s drops the socket.
    for _ in range(300):
        if not c.sio.connected:
            break
        try:
            c.sio.emit("history", bad)
        except socketio.exceptions.BadNamespaceError:
            break   # dropped between emits: the client's read thread removed the namespace
    assert c.disconnected.wait(5)
