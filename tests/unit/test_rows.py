"""A batch applied on top of the one being written takes that one's rows from memory."""

from __future__ import annotations

import pytest

from orca.projections.rows import Rows
from orca.projections.store import Cursor


def no_database() -> Cursor:
    raise AssertionError("the batch went to the database")


def written_batch() -> Rows:
    """A batch that made a job and changed it, and whose writes are under way."""
    first = Rows(no_database)
    first.insert("jobs", {"id": "j1", "name": "build", "n_started": 0})
    first.update("jobs", "j1", n_started=1)
    first.applied()
    return first


def test_a_batch_reads_the_rows_the_batch_before_left_without_the_database() -> None:
    first = written_batch()
    second = Rows(no_database, before=first)

    assert second.get("jobs", "j1") == {"id": "j1", "name": "build", "n_started": 1}
    second.load("jobs", ["j1"])  # known already: no query
    second.update("jobs", "j1", n_started=2)

    assert second.get("jobs", "j1")["n_started"] == 2  # type: ignore[index]
    # The batch before is being written as it left its rows: a copy was changed.
    assert first.get("jobs", "j1") == {"id": "j1", "name": "build", "n_started": 1}


def test_a_row_the_batch_before_never_saw_is_read_from_the_database() -> None:
    second = Rows(no_database, before=written_batch())
    with pytest.raises(AssertionError, match="went to the database"):
        second.get("jobs", "j2")
