"""ice_servers: STUN from settings, TURN with coturn REST credentials."""
import base64
import hashlib
import hmac

from realtime.calls.ice import ice_servers, turn_credentials
from realtime.settings import Settings


def test_no_servers_without_settings():
    assert ice_servers(Settings(), "alice", 1000.0) == []


def test_stun_and_turn_with_time_limited_credentials():
    s = Settings(stun_urls=("stun:stun.example:3478",), turn_urls=("turn:turn.example:3478?transport=udp",),
                 turn_secret="s3cret", turn_ttl_s=600)
    stun, turn = ice_servers(s, "alice", 1000.4)
    assert stun == {"urls": ["stun:stun.example:3478"]}
    assert turn["urls"] == ["turn:turn.example:3478?transport=udp"]
    assert turn["username"] == "1600:alice"
    expected = base64.b64encode(hmac.new(b"s3cret", b"1600:alice", hashlib.sha1).digest()).decode()
    assert turn["credential"] == expected


def test_no_turn_without_secret():
    s = Settings(turn_urls=("turn:t",))
    assert ice_servers(s, "alice", 0) == []
    assert turn_credentials("k", "u", 10, 5)[0] == "15:u"
