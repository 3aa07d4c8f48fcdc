from realtime import ratelimit


def test_burst_is_twice_the_rate_then_refills():
    bucket = None
    allowed = 0
    for _ in range(100):
        ok, bucket = ratelimit.take(bucket, 1000.0, rate=20)
        allowed += ok
    assert allowed == 40
    ok, bucket = ratelimit.take(bucket, 1000.0 + 0.06, rate=20)  # one token back after 50 ms
    assert ok
    ok, bucket = ratelimit.take(bucket, 1000.0 + 0.06, rate=20)
    assert not ok


def test_rates_per_event():
    assert ratelimit.rate_for("message_send") == 20
    assert ratelimit.rate_for("typing_start") == 5
    assert ratelimit.rate_for("presence_update") == 2
    assert ratelimit.rate_for("call_signal") == 50
    assert ratelimit.rate_for("history") == 20


def test_count_recent_window():
    assert ratelimit.count_recent([1.0, 5.0, 10.5], now=11.0, window_s=10) == [5.0, 10.5]
