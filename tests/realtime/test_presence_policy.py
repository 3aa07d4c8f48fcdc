"""The presence policy as pure functions, with an injected clock (no Redis)."""
from dataclasses import replace

from realtime.presence import policy
from realtime.presence.policy import OFFLINE, PresenceState, Shown

GRACE = 10.0
WINDOW = 1.0


def decide(state, now):
    return policy.decide(state, now, grace_s=GRACE, coalesce_s=WINDOW)


def announced(state, now):
    """Apply a decision as the store would; returns (state, announcement, recheck)."""
    d = decide(state, now)
    return d.state, d.announce, d.recheck_at


def test_first_connect_is_announced_at_once():
    state, shown, recheck = announced(PresenceState(connections=1), 100.0)
    assert shown == Shown("online", None, None)
    assert recheck is None
    # Deciding again is a no-op: no event for a refresh.
    assert decide(state, 100.5).announce is None


def test_clean_disconnect_waits_for_the_grace_then_goes_offline_with_last_seen():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    closed = replace(state, connections=0, offline_since=200.0)
    d = decide(closed, 200.0)
    assert d.announce is None and d.recheck_at == 200.0 + GRACE
    assert decide(closed, 209.9).announce is None
    d = decide(closed, 210.0)
    assert d.announce == Shown(OFFLINE, None, 200.0)
    assert d.state.last_seen == 200.0
    assert decide(d.state, 300.0).announce is None


def test_reconnect_within_the_grace_announces_nothing():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    closed = replace(state, connections=0, offline_since=200.0)
    back = replace(closed, connections=1)
    d = decide(back, 205.0)
    assert d.announce is None and d.recheck_at is None
    # Also the late timer of the old close finds nothing to do.
    assert decide(back, 210.0).announce is None


def test_multi_device_online_while_any_socket_is_connected():
    state, _, _ = announced(PresenceState(connections=2), 100.0)
    one_left = replace(state, connections=1, offline_since=150.0)   # one device closed
    assert decide(one_left, 500.0).announce is None


def test_chosen_status_and_invisible_looks_offline():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    busy = policy.choose(state, "busy", "in a meeting")
    state, shown, _ = announced(busy, 102.0)
    assert shown == Shown("busy", "in a meeting", None)
    invisible = policy.choose(state, "invisible", "secret")
    state, shown, _ = announced(invisible, 104.0)
    assert shown == Shown(OFFLINE, None, None)   # no message, no fresh last_seen
    # Disconnecting while invisible tells nobody anything new.
    gone = replace(state, connections=0, offline_since=110.0)
    assert decide(gone, 130.0).announce is None


def test_changes_within_the_window_are_coalesced_to_the_latest():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    away = policy.choose(state, "away", None)
    d = decide(away, 100.3)
    assert d.announce is None and d.recheck_at == 101.0
    busy = policy.choose(away, "busy", None)
    assert decide(busy, 100.6).announce is None
    d = decide(busy, 101.0)
    assert d.announce == Shown("busy", None, None)


def test_a_change_undone_within_the_window_is_never_announced():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    away = policy.choose(state, "away", None)
    assert decide(away, 100.2).announce is None
    back = policy.choose(away, "online", None)
    d = decide(back, 101.0)
    assert d.announce is None and d.recheck_at is None


def test_the_grace_end_is_rechecked_even_inside_a_coalescing_window():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    closed = replace(state, connections=0, offline_since=100.2)
    d = policy.decide(closed, 100.3, grace_s=0.5, coalesce_s=WINDOW)
    assert d.announce is None and d.recheck_at == 100.7
    d = policy.decide(closed, 100.7, grace_s=0.5, coalesce_s=WINDOW)
    assert d.announce is None and d.recheck_at == 101.0   # window still open
    assert policy.decide(closed, 101.0, grace_s=0.5, coalesce_s=WINDOW).announce == Shown(OFFLINE, None, 100.2)


def test_a_dead_node_settled_late_goes_offline_at_once():
    # The sweep records the node's last heartbeat as the close time, so a
    # node found dead after the timeout does not add the grace on top.
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    settled = replace(state, connections=0, offline_since=120.0)
    assert decide(settled, 140.0).announce == Shown(OFFLINE, None, 120.0)


def test_vanished_socket_without_close_time_goes_offline_now():
    state, _, _ = announced(PresenceState(connections=1), 100.0)
    d = decide(replace(state, connections=0), 150.0)
    assert d.announce == Shown(OFFLINE, None, 150.0)


def test_never_online_user_stays_unannounced():
    assert decide(PresenceState(), 10.0).announce is None
    assert decide(PresenceState(offline_since=5.0), 100.0).announce is None
