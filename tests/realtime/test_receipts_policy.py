"""Receipt and unread policy: pure functions with an injected clock."""
from realtime import receipts_policy as rp
from realtime.receipts_policy import PendingRead, StoredRead
from realtime.settings import Settings

S = Settings(receipt_window_s=1.0)


def test_window_allows_one_aggregation_per_pair_per_window():
    assert rp.is_due(None, 100.0, S)
    assert not rp.is_due(99_500, 100.0, S)
    assert rp.is_due(99_000, 100.0, S)


def test_watermark_moves_forward_only_and_is_capped():
    t = rp.aggregate("c", "u", StoredRead(5, 5), PendingRead(public_seq=9, private_seq=9, read_at_ms=7), 20)
    assert (t.seq, t.private_seq, t.public_advanced, t.private_advanced) == (9, 9, True, True)
    assert t.unread == 11 and t.read_at_ms == 7
    assert rp.aggregate("c", "u", StoredRead(5, 5), PendingRead(3, 3, 1), 20) is None  # backwards
    assert rp.aggregate("c", "u", StoredRead(5, 5), PendingRead(5, 5, 1), 20) is None  # repeated
    capped = rp.aggregate("c", "u", StoredRead(0, 0), PendingRead(50, 50, 1), 20)
    assert (capped.seq, capped.private_seq, capped.unread) == (20, 20, 0)


def test_private_read_moves_only_the_private_watermark():
    t = rp.aggregate("c", "u", StoredRead(2, 2), PendingRead(public_seq=-1, private_seq=8, read_at_ms=1), 10)
    assert (t.seq, t.private_seq, t.public_advanced, t.private_advanced, t.unread) == (2, 8, False, True, 2)
    # A later public read below the private watermark shows publicly, unread unchanged.
    t = rp.aggregate("c", "u", StoredRead(2, 8), PendingRead(public_seq=5, private_seq=5, read_at_ms=1), 10)
    assert (t.seq, t.private_seq, t.public_advanced, t.private_advanced) == (5, 8, True, False)


def test_own_messages_are_never_unread():
    # Sending is a private read up to the conversation's last seq (the sent message).
    t = rp.aggregate("c", "u", StoredRead(3, 3), PendingRead(private_seq=12, read_at_ms=5), 12)
    assert (t.seq, t.private_seq, t.unread, t.public_advanced) == (3, 12, 0, False)
    # Messages that arrive later count again.
    assert rp.unread(15, t.private_seq) == 3


def test_effective_state_includes_pending_reads():
    assert rp.effective(StoredRead(1, 1), None, 10) == StoredRead(1, 1)
    assert rp.effective(StoredRead(1, 1), PendingRead(4, 6, 1), 10) == StoredRead(4, 6)
    assert rp.effective(StoredRead(5, 5), PendingRead(4, 4, 1), 10) == StoredRead(5, 5)


def test_pending_read_decodes_what_the_edge_script_writes():
    p = PendingRead.decode(b'{"pub":3,"prv":7,"at":1795655579123}')
    assert p == PendingRead(3, 7, 1795655579123)
    t = rp.aggregate("c", "u", StoredRead(), p, 10)
    assert rp.Target.decode(t.encode()) == t
