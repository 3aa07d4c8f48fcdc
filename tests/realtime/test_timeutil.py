"""Wire timestamps (PROTOCOL §11): pure, no I/O."""
from datetime import datetime, timedelta, timezone

from realtime import timeutil


def test_iso_is_utc_with_milliseconds_and_z():
    assert timeutil.iso(0) == "1970-01-01T00:00:00.000Z"
    assert timeutil.iso(1_764_151_200.25) == "2025-11-26T10:00:00.250Z"


def test_iso_truncates_to_the_millisecond():
    # 0.9999 s is still second 0 on the wire: a rounded value could read as later than it was.
    assert timeutil.iso(1_764_151_200.9999) == "2025-11-26T10:00:00.999Z"


def test_iso_of_datetimes():
    aware = datetime(2025, 11, 26, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert timeutil.iso(aware) == "2025-11-26T10:00:00.123Z"
    assert timeutil.iso(datetime(2025, 11, 26, 10, 0, 0, 5000)) == "2025-11-26T10:00:00.005Z"  # naive is UTC
    assert timeutil.iso(None) is None


def test_from_iso_reads_what_iso_writes():
    assert timeutil.from_iso(timeutil.iso(1_764_151_200.25)) == 1_764_151_200.25
    assert timeutil.from_iso("2025-11-26T10:00:00.250+00:00") == 1_764_151_200.25
