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


def test_a_derived_row_that_neither_batch_knows_is_made_again_from_the_log() -> None:
    asked: list[list[str]] = []

    def from_log(keys: object) -> list[dict[str, object]]:
        asked.append(list(keys))  # type: ignore[call-overload]
        return [{"id": "e1", "system_id": "s1", "started_at": None}]

    first = Rows(no_database, derived={"report_executions": from_log})
    first.insert("report_executions", {"id": "e2", "system_id": "s2", "started_at": None})
    first.update("report_executions", "e2", started_at="2026-11-29T12:00:00.000001Z")
    first.applied()
    second = Rows(no_database, before=first, derived={"report_executions": from_log})

    second.load("report_executions", ["e1", "e2", "e3"])

    assert asked == [["e1", "e3"]]  # e2 comes from the batch before, as it left it
    assert second.get("report_executions", "e1") == {
        "id": "e1", "system_id": "s1", "started_at": None,
    }  # fmt: skip
    assert second.get("report_executions", "e2")["started_at"] == "2026-11-29T12:00:00.000001Z"  # type: ignore[index]
    assert second.get("report_executions", "e3") is None  # the log has no such execution
    assert asked == [["e1", "e3"]]
