import pytest

from realtime.settings import DEV_JWT_SECRET, Settings, SettingsError


def test_dev_secret_refused_outside_dev_mode():
    with pytest.raises(SettingsError):
        Settings.from_env({"JWT_SECRET": DEV_JWT_SECRET}).check_edge_safe()
    Settings.from_env({"JWT_SECRET": DEV_JWT_SECRET, "DEV_MODE": "1"}).check_edge_safe()


def test_missing_secret_refused():
    with pytest.raises(SettingsError):
        Settings.from_env({}).check_edge_safe()


def test_none_algorithm_refused():
    with pytest.raises(SettingsError):
        Settings.from_env({"JWT_SECRET": "x" * 40, "JWT_ALGORITHMS": "HS256,none"}).check_edge_safe()


def test_timings_read_from_env():
    s = Settings.from_env({"CALL_RING_TIMEOUT_S": "3", "AUTH_GRACE_S": "0.5", "EDGE_HEAD_TIMEOUT_S": "2.5"})
    assert s.call_ring_timeout_s == 3.0 and s.auth_grace_s == 0.5 and s.edge_head_timeout_s == 2.5
    assert Settings.from_env({}).edge_head_timeout_s == 20.0
    with pytest.raises(SettingsError):
        Settings.from_env({"TYPING_EXPIRY_S": "soon"})


def test_public_keys_json_mapping():
    s = Settings.from_env({"JWT_PUBLIC_KEYS": '{"k1": "-----BEGIN PUBLIC KEY-----\\nabc"}'})
    assert list(s.jwt_public_keys) == ["k1"]


def test_redis_pool_read_from_env():
    s = Settings.from_env({"REDIS_MAX_CONNECTIONS": "8", "REDIS_POOL_WAIT_S": "0.5"})
    assert s.redis_max_connections == 8 and s.redis_pool_wait_s == 0.5
    with pytest.raises(SettingsError):
        Settings.from_env({"REDIS_MAX_CONNECTIONS": "0"})


def test_fanout_routing_is_rooms_unless_set_to_broadcast():
    assert Settings.from_env({}).fanout_rooms
    assert not Settings.from_env({"FANOUT_ROUTING": "Broadcast"}).fanout_rooms
    with pytest.raises(SettingsError):
        Settings.from_env({"JWT_SECRET": "x" * 40, "FANOUT_ROUTING": "per-node"}).check_edge_safe()
