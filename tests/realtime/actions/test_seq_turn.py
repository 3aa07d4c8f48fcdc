"""A send's turn in its conversation (realtime.actions.conversations.seq_turn), on the
stack's Redis: two round trips that hand over the seq hint and take back the new one."""
import pytest
import redis

from realtime import keys
from realtime.actions import conversations
from realtime.errors import ApiError
from realtime.redis_client import make_redis
from tests import support
from tests.support import unique

TURN = dict(ttl_s=5.0, wait_s=0.2, poll_s=0.002, hint_ttl_s=60)


@pytest.fixture
def r():
    return make_redis(support.SETTINGS)


@pytest.fixture
def sweep_held(r):
    """LAST_SEQ_DUE is one set, which the stack's beat-driven sweep empties every second:
    held, its runs skip, so a conversation noted due stays there for the test to see."""
    lock = r.lock(keys.LAST_SEQ_SWEEP_LOCK, timeout=30)
    assert lock.acquire(blocking=True, blocking_timeout=20)
    yield
    lock.release()


def test_a_turn_builds_on_the_hint_and_leaves_the_new_seq_due_and_the_lock_free(r, sweep_held):
    conv = unique("conv")
    r.set(keys.seq_hint(conv), 41)
    with conversations.seq_turn(r, conv, 7, **TURN) as turn:
        assert turn.last_seq == 41                     # the hint, not the stored 7
        assert r.exists(keys.seq_lock(conv))
        turn.sent_seq = 42
    assert int(r.get(keys.seq_hint(conv))) == 42
    assert 0 < r.ttl(keys.seq_hint(conv)) <= 60
    assert r.sismember(keys.LAST_SEQ_DUE, conv)
    assert not r.exists(keys.seq_lock(conv))


def test_without_a_hint_the_stored_last_seq_stands_in(r):
    conv = unique("conv")
    with conversations.seq_turn(r, conv, 7, **TURN) as turn:
        assert turn.last_seq == 7


def test_a_turn_that_stored_nothing_releases_the_lock_and_notes_nothing(r):
    conv = unique("conv")
    with pytest.raises(RuntimeError):
        with conversations.seq_turn(r, conv, 0, **TURN):
            raise RuntimeError("insert failed")
    assert not r.exists(keys.seq_lock(conv))
    assert not r.exists(keys.seq_hint(conv))
    assert not r.sismember(keys.LAST_SEQ_DUE, conv)


def test_a_taken_turn_is_waited_for_then_refused_as_busy(r):
    conv = unique("conv")
    with conversations.seq_turn(r, conv, 0, **TURN):
        with pytest.raises(ApiError) as refused:
            with conversations.seq_turn(r, conv, 0, **TURN):
                pytest.fail("two holders at once")
    assert refused.value.code == "unavailable" and "busy" in refused.value.message


def test_a_turn_that_outlived_its_lock_neither_lowers_the_hint_nor_frees_the_next_holder(r):
    conv = unique("conv")
    with conversations.seq_turn(r, conv, 0, **TURN) as late:
        # Its lock expired; another sender took the turn and stored seq 5 meanwhile.
        r.set(keys.seq_lock(conv), "next-holder")
        r.set(keys.seq_hint(conv), 5)
        late.sent_seq = 3
    assert int(r.get(keys.seq_hint(conv))) == 5
    assert r.get(keys.seq_lock(conv)) == "next-holder"


def test_redis_down_when_the_turn_is_taken_is_unavailable():
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(ApiError) as refused:
        with conversations.seq_turn(down, unique("conv"), 0, **TURN):
            pytest.fail("no turn without Redis")
    assert refused.value.code == "unavailable"
