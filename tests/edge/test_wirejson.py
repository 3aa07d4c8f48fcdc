"""edge.wirejson: orjson behind the json interface python-socketio/engineio use."""
import json

import pytest
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from edge import wirejson


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, None, True], "b": {"c": "d"}},
    ["message_new", {"text": "héllo ✓ 😀", "seq": 12}],
    {"big": 2**70},                      # beyond orjson: the standard library encodes it
    {1: "int key"},                      # the standard library turns keys into strings too
    "plain",
])
def test_encodes_what_the_standard_library_encodes_to_the_same_value(value):
    encoded = wirejson.dumps(value, separators=(",", ":"))
    assert encoded == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_decodes_str_and_bytes_and_refuses_what_is_not_json():
    assert wirejson.loads('{"a":[1,"é"]}') == wirejson.loads(b'{"a":[1,"\\u00e9"]}') == {"a": [1, "é"]}
    for bad in ("{", "NaN", '"\\ud800"', ""):
        with pytest.raises(ValueError):
            wirejson.loads(bad)


def test_options_orjson_lacks_go_to_the_standard_library():
    assert wirejson.dumps({"a": 1}, indent=1) == json.dumps({"a": 1}, indent=1)
    assert wirejson.loads("1.5", parse_float=str) == "1.5"


def test_socket_io_and_engine_io_packets_round_trip_through_it(monkeypatch):
    monkeypatch.setattr(sio_packet.Packet, "json", wirejson)
    monkeypatch.setattr(eio_packet.Packet, "json", wirejson)
    sent = sio_packet.Packet(sio_packet.EVENT, data=["message_new", {"text": "✓", "seq": 3}], id=7)
    received = sio_packet.Packet(encoded_packet=sent.encode())
    assert (received.packet_type, received.id, received.data) == (sio_packet.EVENT, 7, sent.data)
    opened = eio_packet.Packet(eio_packet.OPEN, {"sid": "x", "upgrades": [], "pingInterval": 25000})
    assert opened.encode() == '0{"sid":"x","upgrades":[],"pingInterval":25000}'
