"""The call state machine, pure, with an injected clock (no stack needed)."""
from types import SimpleNamespace

import pytest

from realtime.calls import machine as m
from realtime.calls.machine import Party
from realtime.errors import ApiError

SETTINGS = SimpleNamespace(call_ring_timeout_s=45.0, call_reconnect_grace_s=15.0)
T0 = 1_000_000.0
ALICE = Party("alice", "a-phone")
BOB_PHONE = Party("bob", "b-phone")
BOB_LAPTOP = Party("bob", "b-laptop")


def direct(busy=()):
    return m.start("c1", "conv", False, "audio", ALICE, ["bob"], list(busy), {"type": "offer"}, T0,
                   SETTINGS.call_ring_timeout_s)


def group(callees=("bob", "carol")):
    return m.start("g1", "conv", True, "video", ALICE, list(callees), [], None, T0,
                   SETTINGS.call_ring_timeout_s)


def of(effects, kind):
    return [e for e in effects if isinstance(e, kind)]


def sent(effects, event):
    return [e for e in effects if isinstance(e, (m.ToUsers, m.ToParties)) and e.event == event]


def test_start_rings_every_callee_and_nominates_the_ring_timeout():
    state, effects = direct()
    assert state.status == m.RINGING and state.ringing_ids == ["bob"]
    (incoming,) = sent(effects, "call_incoming")
    assert incoming.user_ids == ("bob",)
    assert incoming.data["from"] == {"user_id": "alice", "device_id": "a-phone"}
    assert incoming.data["expires_at"] == T0 + 45
    assert m.Nominate("ring", T0 + 45) in effects
    assert m.Record("started") in effects and m.Claim("alice") in effects


def test_busy_callee_is_not_rung_and_a_direct_call_ends_busy():
    state, effects = direct(busy=["bob"])
    assert state.status == m.ENDED and state.end_reason == m.BUSY
    assert not sent(effects, "call_incoming")
    (ended,) = sent(effects, "call_ended")
    assert ended.data["reason"] == "busy" and "alice" in ended.user_ids
    assert m.Release("alice") in effects


def test_first_answer_wins_and_other_devices_stop_ringing():
    state, _ = direct()
    state, effects = m.apply(state, m.Answer(BOB_PHONE, "sdp-answer"), T0 + 2, SETTINGS)
    assert state.status == m.ACTIVE and state.answered_at == T0 + 2
    (answered,) = sent(effects, "call_answered")
    assert answered.parties == (ALICE,) and answered.data["device_id"] == "b-phone"
    (elsewhere,) = sent(effects, "call_ended")
    assert elsewhere.data["reason"] == "answered_elsewhere" and elsewhere.except_party == BOB_PHONE
    assert m.Record("answered") in effects
    with pytest.raises(ApiError) as err:
        m.apply(state, m.Answer(BOB_LAPTOP, None), T0 + 2.1, SETTINGS)
    assert err.value.code == "conflict"


def test_outsider_cannot_answer():
    state, _ = direct()
    with pytest.raises(ApiError) as err:
        m.apply(state, m.Answer(Party("mallory", "x"), None), T0 + 1, SETTINGS)
    assert err.value.code == "forbidden"


def test_decline_ends_a_direct_call():
    state, _ = direct()
    state, effects = m.apply(state, m.Reject("bob", m.DECLINED), T0 + 1, SETTINGS)
    assert state.status == m.ENDED and state.end_reason == "declined" and state.ended_by == "bob"
    (ended,) = sent(effects, "call_ended")
    assert set(ended.user_ids) == {"alice", "bob"} and ended.data["duration_s"] == 0


def test_hangup_reports_duration_from_answer():
    state, _ = direct()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 5, SETTINGS)
    state, effects = m.apply(state, m.End("alice"), T0 + 65, SETTINGS)
    (ended,) = sent(effects, "call_ended")
    assert ended.data == {"call_id": "c1", "reason": "hangup", "ended_by": "alice", "duration_s": 60}
    assert m.Release("alice") in effects and m.Release("bob") in effects
    with pytest.raises(ApiError):
        m.apply(state, m.End("bob"), T0 + 66, SETTINGS)


def test_ring_timeout_rechecks_the_deadline():
    state, _ = direct()
    same, effects = m.apply(state, m.RingTimeout(), T0 + 44.9, SETTINGS)
    assert same.status == m.RINGING and effects == [m.Nominate("ring", T0 + 45)]
    ended, effects = m.apply(state, m.RingTimeout(), T0 + 45, SETTINGS)
    assert ended.end_reason == "no_answer" and ended.ended_by is None
    assert m.Missed(("bob",)) in effects


def test_timeout_after_answer_does_nothing():
    state, _ = direct()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 44, SETTINGS)
    after, effects = m.apply(state, m.RingTimeout(), T0 + 46, SETTINGS)
    assert after.status == m.ACTIVE and effects == []


def test_reconnect_within_grace_keeps_the_call():
    state, _ = direct()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    state, effects = m.apply(state, m.DeviceGone(BOB_PHONE), T0 + 10, SETTINGS)
    assert effects == [m.Nominate("gone", T0 + 25, BOB_PHONE)]
    state, effects = m.apply(state, m.GraceCheck(BOB_PHONE, connected=True), T0 + 25, SETTINGS)
    assert state.status == m.ACTIVE and not state.gone_since and effects == []


def test_gone_past_grace_ends_a_direct_call_connection_lost():
    state, _ = direct()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    state, _ = m.apply(state, m.DeviceGone(BOB_PHONE), T0 + 10, SETTINGS)
    early, effects = m.apply(state, m.GraceCheck(BOB_PHONE, connected=False), T0 + 20, SETTINGS)
    assert early.status == m.ACTIVE and effects == [m.Nominate("gone", T0 + 25, BOB_PHONE)]
    ended, effects = m.apply(state, m.GraceCheck(BOB_PHONE, connected=False), T0 + 25, SETTINGS)
    assert ended.end_reason == "connection_lost" and ended.duration_s == 24


def test_a_second_disconnect_moves_the_grace():
    state, _ = direct()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    state, _ = m.apply(state, m.DeviceGone(BOB_PHONE), T0 + 10, SETTINGS)
    state, _ = m.apply(state, m.GraceCheck(BOB_PHONE, connected=True), T0 + 11, SETTINGS)
    state, _ = m.apply(state, m.DeviceGone(BOB_PHONE), T0 + 20, SETTINGS)
    same, effects = m.apply(state, m.GraceCheck(BOB_PHONE, connected=False), T0 + 25, SETTINGS)
    assert same.status == m.ACTIVE and effects == [m.Nominate("gone", T0 + 35, BOB_PHONE)]


def test_group_call_join_leave_and_end_with_the_last():
    state, _ = group()
    state, effects = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    (joined,) = sent(effects, "call_participant_joined")
    assert joined.parties == (ALICE,)
    dave = Party("dave", "d1")
    state, effects = m.apply(state, m.Join(dave), T0 + 2, SETTINGS)
    (joined,) = sent(effects, "call_participant_joined")
    assert set(joined.parties) == {ALICE, BOB_PHONE}
    state, effects = m.apply(state, m.Leave(ALICE), T0 + 3, SETTINGS)
    assert state.status == m.ACTIVE
    (left,) = sent(effects, "call_participant_left")
    assert set(left.parties) == {BOB_PHONE, dave} and m.Release("alice") in effects
    state, _ = m.apply(state, m.Leave(BOB_PHONE), T0 + 4, SETTINGS)
    state, effects = m.apply(state, m.Leave(dave), T0 + 5, SETTINGS)
    assert state.status == m.ENDED and state.end_reason == "hangup" and state.ended_by == "dave"
    (ended,) = sent(effects, "call_ended")
    assert {"alice", "bob", "carol", "dave"} == set(ended.user_ids)


def test_group_mesh_is_capped_at_eight():
    state, _ = group(callees=[f"u{i}" for i in range(10)])
    for i in range(7):
        state, _ = m.apply(state, m.Answer(Party(f"u{i}", "d")), T0 + 1, SETTINGS)
    assert len(state.participants) == 8
    with pytest.raises(ApiError) as err:
        m.apply(state, m.Answer(Party("u8", "d")), T0 + 2, SETTINGS)
    assert err.value.code == "conflict"
    with pytest.raises(ApiError):
        m.apply(state, m.Join(Party("z", "d")), T0 + 2, SETTINGS)


def test_group_ring_timeout_stops_ringing_but_keeps_an_answered_call():
    state, _ = group()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    state, effects = m.apply(state, m.RingTimeout(), T0 + 45, SETTINGS)
    assert state.status == m.ACTIVE and state.ringing_ids == []
    (stop,) = sent(effects, "call_ended")
    assert stop.user_ids == ("carol",) and stop.data["reason"] == "no_answer"
    assert m.Missed(("carol",)) in effects


def test_group_participant_lost_leaves_without_ending():
    state, _ = group()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    state, _ = m.apply(state, m.DeviceGone(BOB_PHONE), T0 + 2, SETTINGS)
    state, effects = m.apply(state, m.GraceCheck(BOB_PHONE, connected=False), T0 + 17, SETTINGS)
    assert state.status == m.ACTIVE and state.participants == [ALICE]
    assert sent(effects, "call_participant_left")


def test_state_round_trips_through_json_dicts():
    import orjson
    state, _ = group()
    state, _ = m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    again = m.CallState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert again == state


def test_apply_does_not_mutate_the_given_state():
    state, _ = direct()
    m.apply(state, m.Answer(BOB_PHONE), T0 + 1, SETTINGS)
    assert state.status == m.RINGING and state.participants == [ALICE]
