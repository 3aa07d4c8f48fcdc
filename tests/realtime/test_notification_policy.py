"""The notification decisions, as pure functions with an injected clock."""
from realtime.notifications import policy
from realtime.notifications.policy import Preference, Window


def test_route_in_room_connected_elsewhere_offline():
    assert policy.route(connected=True, in_room=True) == policy.ROUTE_NONE
    assert policy.route(connected=True, in_room=False) == policy.ROUTE_IN_APP
    assert policy.route(connected=False, in_room=False) == policy.ROUTE_PUSH


def test_mentions_parse_user_ids():
    assert policy.mentioned_users("hi @bob-1 and @carol.") == {"bob-1", "carol"}
    assert policy.mentioned_users(None) == set()
    assert policy.kind_for("bob", "ping @bob") == policy.KIND_MENTION
    assert policy.kind_for("bob", "ping @bobby") == policy.KIND_MESSAGE


def test_levels_and_mute_with_a_clock():
    now = 1000.0
    assert policy.allows(Preference("all"), policy.KIND_MESSAGE, now)
    assert not policy.allows(Preference("none"), policy.KIND_MENTION, now)
    assert not policy.allows(Preference("mentions"), policy.KIND_MESSAGE, now)
    assert policy.allows(Preference("mentions"), policy.KIND_MENTION, now)
    assert policy.allows(Preference("mentions"), policy.KIND_CALL_MISSED, now)
    muted = Preference("all", muted_until=now + 60)
    assert not policy.allows(muted, policy.KIND_MENTION, now)
    assert policy.allows(muted, policy.KIND_MENTION, now + 60)  # mute over


def test_conversation_setting_wins_over_default():
    default, conv = Preference("none"), Preference("all")
    assert policy.effective(default, conv) == conv
    assert policy.effective(default, None) == default
    assert policy.effective(None, None) == Preference("all")


def test_badge_sums_unread_after_watermarks():
    assert policy.unread_total({"a": 10, "b": 3, "c": 0}, {"a": 7, "b": 5}) == 3 + 0 + 0
    assert policy.unread_total({"a": 4}, {}) == 4


def test_coalesce_first_now_then_one_push_with_the_count():
    w, t = 1.0, 100.0
    action, state = policy.coalesce(Window(), "n1", t, w)
    assert action == policy.SEND_NOW and state.until == t + w
    actions = []
    for i in range(2, 11):  # nine more within the window
        action, state = policy.coalesce(state, f"n{i}", t + i * 0.05, w)
        actions.append(action)
    assert actions[0] == policy.DEFER_SCHEDULE and set(actions[1:]) == {policy.DEFER}
    assert state.pending == 9 and state.latest == "n10"
    # flush early: nothing yet
    due, same = policy.flush(state, t + 0.9, w)
    assert due is None and same == state
    due, after = policy.flush(state, t + w, w)
    assert due == ("n10", 9) and after == Window(until=t + 2 * w)
    # a message right after the flush waits for the next window
    action, _ = policy.coalesce(after, "n11", t + w + 0.1, w)
    assert action == policy.DEFER_SCHEDULE


def test_after_a_quiet_window_the_next_push_is_immediate():
    action, state = policy.coalesce(Window(), "a", 0.0, 1.0)
    action, state = policy.coalesce(state, "b", 5.0, 1.0)
    assert action == policy.SEND_NOW


def test_clear_drops_pending_and_flush_then_sends_nothing():
    _, state = policy.coalesce(Window(), "a", 0.0, 1.0)
    _, state = policy.coalesce(state, "b", 0.1, 1.0)
    state = policy.clear_pending(state)
    assert policy.flush(state, 2.0, 1.0)[0] is None


def test_payload_shape():
    p = policy.payload(policy.KIND_MENTION, "c1", 3, 7, "alice", "hi", message_id="m1")
    assert p == {"type": "message", "conversation_id": "c1", "count": 3, "badge": 7, "title": "alice",
                 "body": "hi", "message_id": "m1"}
    clear = policy.payload(policy.KIND_CLEAR, "c1", 0, 2, "", "")
    assert clear["type"] == "clear" and clear["count"] == 0 and clear["title"] == "" == clear["body"]
    assert policy.other_devices(["d1", "d2"], "d1") == ["d2"]
