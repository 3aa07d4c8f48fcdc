"""Health, readiness and CORS of every node."""
import requests

from tests import support


def test_healthz_and_readyz():
    for base in (support.EDGE1, support.EDGE2, support.BALANCER):
        assert requests.get(f"{base}/healthz", timeout=2).status_code == 200
    for base in (support.EDGE1, support.EDGE2):
        assert requests.get(f"{base}/readyz", timeout=2).status_code == 200


def test_readyz_is_503_when_redis_is_unreachable():
    proc = support.start_edge(5041, "noredis", {"REDIS_URL": "redis://127.0.0.1:1/0"}, wait=False)
    try:
        status = support.eventually(
            lambda: _status("http://127.0.0.1:5041/readyz"), timeout=20, message="edge answering")
        assert status == 503
        assert _status("http://127.0.0.1:5041/healthz") == 200
    finally:
        support.stop_process(proc)


def test_a_fresh_node_is_subscribed_to_the_fan_out_channel_before_it_is_ready():
    """Before any client connects: what other nodes send its first sockets must reach them."""
    import redis
    r = redis.Redis.from_url(support.SETTINGS.redis_url)
    subscribers = lambda: r.pubsub_numsub(support.SETTINGS.socketio_channel)[0][1]  # noqa: E731
    before = subscribers()
    proc = support.start_edge(5041, support.unique("fresh"))   # returns once /readyz is 200
    try:
        assert subscribers() == before + 1
    finally:
        support.stop_process(proc)
    support.eventually(lambda: subscribers() == before, message="the stopped node unsubscribed")


def _status(url):
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def test_cors_allows_configured_origin():
    resp = requests.get(f"{support.EDGE1}/socket.io/?EIO=4&transport=polling",
                        headers={"Origin": "http://app.example"}, timeout=2)
    assert resp.status_code == 200
    assert resp.headers.get("Access-Control-Allow-Origin") in ("*", "http://app.example")
