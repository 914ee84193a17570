"""Moments in the read models: UTC, a ``Z``, always six digits of fraction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from orca.projections.views import iso

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


@given(st.datetimes(min_value=datetime(1000, 1, 2), timezones=ZONES))
def test_iso_is_the_utc_moment_with_a_fixed_width(moment: datetime) -> None:
    text = iso(moment)
    assert text == moment.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"
    assert len(text) == 27
    assert datetime.fromisoformat(text) == moment


def test_a_whole_second_keeps_its_fraction() -> None:
    assert iso(datetime(2026, 11, 29, 4, 5, 6, tzinfo=UTC)) == "2026-11-29T04:05:06.000000Z"
