"""The edge's fast broadcast path (edge/fastpath.py, EDGE_FAST_BROADCAST): frames are
byte-identical to eventlet's, and a reader that stops reading loses nothing and gets
everything in order (the direct write falls back to the queue, frames stay whole)."""
import json
import socket
import time

import pytest
import socketio
import websocket
from eventlet.websocket import RFC6455WebSocket

from edge.fastpath import text_frame
from realtime import keys
from tests import support
from tests.support import unique


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_matches_eventlet(size):
    payload = "4" + "é" * (size // 2) + "x" * (size - size // 2)
    ws = RFC6455WebSocket.__new__(RFC6455WebSocket)
    ws.extensions = {}
    expected = RFC6455WebSocket._pack_message(ws, payload)
    assert text_frame(payload) == expected


def _raw_client(url, user, conv):
    """A Socket.IO client spoken by hand over websocket-client, with a tiny receive buffer."""
    ws = websocket.create_connection(
        url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
        sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),), timeout=10)
    assert ws.recv().startswith("0")
    ws.send("40" + json.dumps({"token": support.token(user)}))
    ack = None
    ws.send("420" + json.dumps(["join_room", {"conversation_id": conv}]))
    deadline = time.monotonic() + 10
    while ack is None and time.monotonic() < deadline:
        frame = ws.recv()
        if frame == "2":
            ws.send("3")
        elif frame.startswith("430"):
            ack = json.loads(frame[3:])[0]
    assert ack and ack["ok"], ack
    return ws


def test_slow_reader_gets_every_message_in_order(clients):
    """Broadcasts from a worker (write-only manager, as Celery tasks emit) to a room with
    a fast reader and one that stops reading: the slow one's buffers fill up, then it
    reads again and must get every frame whole and in order."""
    node = support.EDGE1
    reader, fast = unique("reader"), unique("fast")
    conv = support.make_conversation([reader, fast])
    raw = _raw_client(node, reader, conv)
    other = clients(node, user=fast)
    assert other.call("join_room", {"conversation_id": conv})["ok"]
    manager = socketio.RedisManager(support.SETTINGS.redis_url, channel=support.SETTINGS.socketio_channel,
                                    write_only=True)
    body = "y" * 16000
    total = 300  # ~4.8 MB: far more than the socket buffers of a reader with a 4 KB window
    for i in range(total):
        manager.emit("message_new", {"message": {"seq": i, "body": f"{i}:{body}"}}, room=keys.conversation_room(conv),
                     namespace="/")
    # the reader that keeps reading gets everything meanwhile
    support.eventually(lambda: len(other.received("message_new")) >= total, timeout=30,
                       message=f"the fast reader got every message of {total}: "
                               f"{len(other.received('message_new'))}")
    assert [m["message"]["seq"] for m in other.received("message_new")] == list(range(total))
    time.sleep(0.5)  # the slow reader's buffers are full by now: resume reading
    got = []
    deadline = time.monotonic() + 30
    while len(got) < total and time.monotonic() < deadline:
        frame = raw.recv()
        if frame == "2":
            raw.send("3")
            continue
        if frame.startswith("42"):
            event, data = json.loads(frame[2:])
            assert event == "message_new"
            got.append(data["message"])
    raw.close()
    assert [m["seq"] for m in got] == list(range(total))
    assert all(m["body"] == f"{m['seq']}:{body}" for m in got)


def test_ping_wheel_pings_due_sockets_in_order_and_skips_closed():
    from types import SimpleNamespace

    from edge.fastpath import PingWheel

    sent = []

    class Sock:
        def __init__(self, name, closed=False):
            self.name, self.closing, self.closed, self.last_ping = name, False, closed, None

        def send(self, pkt):
            sent.append((self.name, pkt.packet_type))

    server = SimpleNamespace(ping_interval=25, start_background_task=lambda fn: object())
    wheel = PingWheel(server)
    a, b, gone = Sock("a"), Sock("b"), Sock("gone", closed=True)
    for s in (a, gone, b):
        wheel.schedule(s)
    due = wheel.queue[0][0]
    wheel.tick(due - 1)
    assert sent == []
    wheel.tick(due + 1)
    assert sent == [("a", 2), ("b", 2)]  # Engine.IO PING, the closed socket skipped
    assert a.last_ping and b.last_ping and not wheel.queue
