"""edge.gcpolicy: the collector settings an edge process applies at start."""
import gc
import logging
import time

import pytest

from edge import gcpolicy
from realtime.settings import Settings


@pytest.fixture
def restored_gc():
    """Leave the test process's collector as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    if gcpolicy._log_slow_collections in gc.callbacks:
        gc.callbacks.remove(gcpolicy._log_slow_collections)


def test_defaults_raise_the_young_threshold_lower_the_middle_one_and_freeze_what_is_alive(restored_gc):
    gc.set_threshold(700, 10, 10)   # Python's
    settings = Settings.from_env({})
    assert settings.edge_gc_young_threshold == 10_000 and settings.edge_gc_freeze
    assert settings.edge_gc_middle_threshold == 1

    frozen = gcpolicy.apply(settings)

    # A full collection is still considered every ~121 young collections: 2 x 60.
    assert gc.get_threshold() == (10_000, 1, 59)
    assert frozen > 1000                            # at least the imported modules
    # Frozen objects are still freed by reference counting, so the count can only have
    # fallen since (by the odd object another thread of this process let go of).
    assert frozen - 100 < gc.get_freeze_count() <= frozen
    assert gc.get_count()[0] < 100                  # nothing left young to walk


def test_both_can_be_turned_off(restored_gc):
    gc.set_threshold(700, 10, 10)
    frozen = gcpolicy.apply(Settings.from_env({"EDGE_GC_YOUNG_THRESHOLD": "0", "EDGE_GC_MIDDLE_THRESHOLD": "0",
                                               "EDGE_GC_FREEZE": "0"}))
    assert frozen == 0 and gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("middle, old, new_middle, expected", [(10, 10, 10, 10), (10, 10, 1, 59), (10, 10, 4, 23)])
def test_the_old_threshold_keeps_the_young_collections_between_two_full_ones(middle, old, new_middle, expected):
    assert gcpolicy._scaled_old(middle, old, new_middle) == expected
    assert abs((new_middle + 1) * (expected + 1) - (middle + 1) * (old + 1)) <= new_middle + 1


def test_the_old_threshold_is_at_least_one():
    assert gcpolicy._scaled_old(1, 1, 100) == 1


def test_applying_twice_does_not_scale_the_old_threshold_twice(restored_gc):
    gc.set_threshold(700, 10, 10)
    settings = Settings.from_env({"EDGE_GC_FREEZE": "0"})
    gcpolicy.apply(settings)
    gcpolicy.apply(settings)
    assert gc.get_threshold() == (10_000, 1, 59)


def test_applying_twice_installs_one_slow_collection_logger(restored_gc):
    settings = Settings.from_env({"EDGE_GC_FREEZE": "0"})
    gcpolicy.apply(settings)
    gcpolicy.apply(settings)
    assert gc.callbacks.count(gcpolicy._log_slow_collections) == 1


def test_a_long_collection_is_logged_and_a_short_one_is_not(caplog):
    caplog.set_level(logging.WARNING, logger="edge.gcpolicy")
    info = {"generation": 2, "collected": 7}
    gcpolicy._log_slow_collections("start", info)
    gcpolicy._log_slow_collections("stop", info)
    assert caplog.records == []

    gcpolicy._log_slow_collections("start", info)
    gcpolicy._started_at = time.perf_counter() - (gcpolicy.SLOW_COLLECTION_MS + 50) / 1000
    gcpolicy._log_slow_collections("stop", info)
    [record] = caplog.records
    assert "generation 2" in record.getMessage() and "7 objects freed" in record.getMessage()


def test_a_logging_failure_does_not_escape_the_collector_callback(monkeypatch):
    # At exit under eventlet, logging's current_thread() raises "greenlet is being finalized".
    def failing_warning(*args, **kwargs):
        raise RuntimeError("greenlet is being finalized")

    monkeypatch.setattr(gcpolicy.log, "warning", failing_warning)
    info = {"generation": 1, "collected": 3}
    gcpolicy._log_slow_collections("start", info)
    gcpolicy._started_at = time.perf_counter() - (gcpolicy.SLOW_COLLECTION_MS + 50) / 1000
    gcpolicy._log_slow_collections("stop", info)   # no exception
