import uuid

from realtime import envelope, timeutil


def test_envelope_shape_key_and_topic():
    env = envelope.make("message.created", envelope.source_id("edge", "n1"), {"message": {}},
                        user_id="alice", conversation_id="c1", occurred_at=0)
    d = env.to_dict()
    assert set(d) == {"event_id", "type", "occurred_at", "source", "data", "user_id", "conversation_id"}
    assert d["occurred_at"] == "1970-01-01T00:00:00.000Z"
    assert env.key == "c1" and env.topic == "messages"
    assert envelope.is_own_source(d["source"])
    assert not envelope.is_own_source("message-service")


def test_key_falls_back_to_user():
    env = envelope.make("presence.changed", "realtime/edge/x", {}, user_id="bob")
    assert env.key == "bob" and env.topic == "presence"


def test_stable_event_ids():
    assert envelope.stable_event_id("a", "b") == envelope.stable_event_id("a", "b")
    assert envelope.stable_event_id("a", "b") != envelope.stable_event_id("a", "c")


def test_stable_event_ids_are_the_uuid5_of_the_joined_parts():
    for parts in [("a",), ("presence.changed", "user-1", "1764150000.123"), ("é", "x\x1fy"), ("",), ("z" * 300,)]:
        want = uuid.uuid5(envelope._EVENT_NS, "\x1f".join(parts))
        assert envelope.stable_event_id(*parts) == str(want)
        assert uuid.UUID(envelope.stable_event_id(*parts)).version == 5


def test_iso_has_millis_and_z():
    assert timeutil.iso(1.2345) == "1970-01-01T00:00:01.234Z"
    assert timeutil.from_iso("1970-01-01T00:00:01.234Z") == 1.234
