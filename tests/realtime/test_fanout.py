"""realtime.fanout: which channel carries a manager message."""
from realtime.fanout import channel_for, is_routed_room


def emit(room, namespace="/"):
    return {"method": "emit", "event": "e", "data": [1], "namespace": namespace, "room": room}


def test_emits_to_user_and_conversation_rooms_go_on_their_rooms_channels():
    assert channel_for("socketio", emit("user:alice"), routing=True) == "socketio#/#user:alice"
    assert channel_for("socketio", emit("conv:c1", "/chat"), routing=True) == "socketio#/chat#conv:c1"


def test_everything_else_goes_on_the_base_channel_that_every_node_reads():
    for room in (None, "edge1.AbCdEfGh", "presence:bob", ["user:a", "user:b"], "lobby"):
        assert channel_for("socketio", emit(room), routing=True) == "socketio", room
    for method in ("disconnect", "enter_room", "leave_room", "close_room", "callback"):
        message = {"method": method, "room": "user:alice", "sid": "edge1.x", "namespace": "/"}
        assert channel_for("socketio", message, routing=True) == "socketio", method


def test_with_routing_off_every_message_goes_on_the_base_channel():
    assert channel_for("socketio", emit("user:alice"), routing=False) == "socketio"


def test_only_named_user_and_conversation_rooms_are_routed():
    assert is_routed_room("user:alice") and is_routed_room("conv:c1")
    assert not is_routed_room("presence:alice") and not is_routed_room(None) and not is_routed_room(("user:a",))
