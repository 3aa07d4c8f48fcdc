"""Aggregate pending reads (PROTOCOL §7): at most one MongoDB write and one
`read_receipt` per (user, conversation) per RECEIPT_WINDOW_S, carrying the
newest watermark.

A run, under a Redis lock (one run at a time):
  1. redo the targets a killed run left in READS_FLUSHING;
  2. read every pending read; keep those whose window passed (receipts_policy.is_due);
  then, chunk by chunk while the run's budget lasts:
  3. read stored state and last_seq, compute targets (receipts_policy.aggregate);
  4. stage atomically: drop each pending entry that did not change since step 2
     and record its target in READS_FLUSHING;
  5. apply: MongoDB ($max), outbox, emits; start the pair's window; forget the targets.
A run killed before 4 leaves the pending reads; killed after 4, the targets. So
no read is lost, and a redone target writes the same values and the same event_id.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from realtime.redis_client import script
from realtime import keys, receipts_policy
from realtime.actions import receipts
from realtime.actions.context import Context
from realtime.receipts_policy import PendingRead, StoredRead, Target

log = logging.getLogger(__name__)

# Pairs read per run; they are aggregated in chunks (one MongoDB write per pair)
# until the run's budget is spent, so a run stays well within the task's time
# limit; the rest wait for the next tick.
BATCH_SIZE = 5000
CHUNK = 100
RUN_BUDGET_S = 3.0


def _apply(ctx: Context, targets: dict[str, tuple[bytes | str, Target]],
           fail_at: Callable[[str], None] | None) -> None:
    if not targets:
        return
    items = list(targets.values())
    receipts.write([t for _, t in items])
    if fail_at:
        fail_at("after_write")
    receipts.announce(ctx, [t for _, t in items])
    now_ms = int(ctx.clock() * 1000)
    window_ms = max(1, int(ctx.settings.receipt_window_s * 1000))
    pipe = ctx.redis.pipeline(transaction=False)
    for member in targets:
        pipe.set(keys.reads_flushed(member), now_ms, px=window_ms)
    done_args: list = []
    for member, (raw, _) in targets.items():
        done_args += [member, raw]
    pipe.hincrby(keys.READS_STATS, "mongo_writes", len(items))
    pipe.hincrby(keys.READS_STATS, "batches", 1)
    pipe.hincrby(keys.READS_STATS, "read_receipts", sum(1 for _, t in items if t.public_advanced))
    pipe.execute()
    script(ctx.redis, receipts._DONE)(keys=[keys.READS_FLUSHING], args=done_args)


def flush(ctx: Context, *, batch_size: int = BATCH_SIZE,
          fail_at: Callable[[str], None] | None = None) -> int:
    """One aggregation run. Returns how many (conversation, user) pairs changed.

    `fail_at(stage)` is a test hook called at "after_read", "after_stage" and
    "after_write", to simulate a worker killed there.
    """
    r = ctx.redis
    # 1. what a killed run left half done
    leftover = r.hgetall(keys.READS_FLUSHING)
    if leftover:
        log.info("redoing %d receipt targets of an interrupted run", len(leftover))
        _apply(ctx, {m: (raw, Target.decode(raw)) for m, raw in leftover.items()}, fail_at)

    # 2. due pending reads
    pending_raw = r.hgetall(keys.READS_PENDING)
    if not pending_raw:
        return len(leftover)
    members = list(pending_raw)[:batch_size]
    now = ctx.clock()
    last_flushed = r.mget([keys.reads_flushed(m) for m in members])
    due = [m for m, last in zip(members, last_flushed)
           if receipts_policy.is_due(int(last) if last is not None else None, now, ctx.settings)]
    if not due:
        return len(leftover)
    if fail_at:
        fail_at("after_read")

    started = time.monotonic()
    changed = len(leftover)
    done = 0
    for i in range(0, len(due), CHUNK):
        if i and time.monotonic() - started > RUN_BUDGET_S:
            break  # the rest is due at the next tick
        changed += _aggregate(ctx, due[i:i + CHUNK], pending_raw, fail_at)
        done = min(len(due), i + CHUNK)
    if done < len(due) or time.monotonic() - started > RUN_BUDGET_S / 2:
        log.info("receipts: aggregated %d of %d due pairs (%d pending) in %.2fs", done, len(due),
                 len(pending_raw), time.monotonic() - started)
    return changed


def _aggregate(ctx: Context, members: list[str], pending_raw: dict, fail_at) -> int:
    r = ctx.redis
    # 3. targets
    pairs = {m: keys.split_pair(m) for m in members}
    last_seq = receipts.last_seqs(r, sorted({c for c, _ in pairs.values()}))
    stored = receipts.stored_reads(list(pairs.values()))
    stage_args: list = []
    targets: dict[str, tuple[bytes, Target]] = {}
    for member in members:
        conversation_id, user_id = pairs[member]
        target = receipts_policy.aggregate(conversation_id, user_id,
                                           stored.get((conversation_id, user_id), StoredRead()),
                                           PendingRead.decode(pending_raw[member]),
                                           last_seq.get(conversation_id, 0))
        raw_target = target.encode() if target is not None else b""
        if target is not None:
            targets[member] = (raw_target, target)
        stage_args += [member, pending_raw[member], raw_target]

    # 4. stage (pending -> flushing), atomically
    script(r, receipts._STAGE)(keys=[keys.READS_PENDING, keys.READS_FLUSHING], args=stage_args)
    if fail_at:
        fail_at("after_stage")

    # 5. apply
    # The Lua script stored the raw target as a string; compare against that.
    _apply(ctx, {m: (raw.decode(), t) for m, (raw, t) in targets.items()}, fail_at)
    return len(targets)
