"""A reporting read model built only from the log: per system and day, how many executions
ran, how many completed, and how long they took.

It has its own position (``orca-reports``), so an installation that adds it fills it from
history on the first start, while everything else keeps running.

What it knows of an execution from its creation to its end (its system, when it started) is a
derived row (see ``rows``): kept in memory from batch to batch, and read back from the
execution's own events when a batch finds it there no more. Nothing of an execution is stored
but its part in the figures of its day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from orca.domain.job import Execution
from orca.projections.rows import Log, Projection, Row, Rows
from orca.projections.store import Cursor, ReadStore
from orca.projections.views import iso


def _executions_from_log(log: Log, ids: Sequence[str], until: int) -> list[Row]:
    """What the handlers below make of these executions' events up to ``until``: they are
    applied again, to a batch of their own that knows no other row. (A batch asks only of
    executions whose end it has yet to apply.)"""
    again = Rows(_no_database, derived={"report_executions": lambda keys: ()})
    for cls, e in log.events_of(ids, until):
        if cls is Execution.Created:
            _created(again, e, 0)
        elif cls is Execution.Started:
            _started(again, e, 0)
    return [row for i in ids if (row := again.get("report_executions", i)) is not None]


def _no_database() -> Cursor:
    raise RuntimeError("an execution's report row is made from its own events alone")


def _created(rows: Rows, e: Execution.Created, seq: int) -> None:
    rows.insert(
        "report_executions",
        {"id": str(e.originator_id), "system_id": str(e.system_id), "started_at": None},
    )


def _started(rows: Rows, e: Execution.Started, seq: int) -> None:
    rows.update("report_executions", str(e.originator_id), started_at=iso(e.timestamp))


def _finished(rows: Rows, e: Execution.Finished, seq: int) -> None:
    execution_id = str(e.originator_id)
    row = rows.get("report_executions", execution_id)
    if row is None or row["started_at"] is None:
        return
    duration = max(0.0, (e.timestamp - datetime.fromisoformat(row["started_at"])).total_seconds())
    key = (row["system_id"], iso(e.timestamp)[:10])
    completed = int(e.status == "completed")
    day = rows.get("report_system_days", key)
    if day is None:
        rows.insert(
            "report_system_days",
            {
                "system_id": key[0], "day": key[1], "executions": 1, "completed": completed,
                "duration_sum": duration,
            },
        )  # fmt: skip
    else:
        rows.update(
            "report_system_days", key,
            executions=day["executions"] + 1, completed=day["completed"] + completed,
            duration_sum=day["duration_sum"] + duration,
        )  # fmt: skip
    rows.delete("report_executions", execution_id)


REPORTS = Projection(
    name="orca-reports",
    handlers={
        Execution.Created: _created,
        Execution.Started: _started,
        Execution.Finished: _finished,
    },
    tables=("report_system_days",),
    gather_seconds=0.5,
    own_rows={Execution.Started: "report_executions", Execution.Finished: "report_executions"},
    derived={"report_executions": _executions_from_log},
)


class SystemDay(msgspec.Struct):
    system_id: str
    system_name: str | None
    day: str
    executions: int
    completed: int
    success_rate: float
    mean_duration_seconds: float


def system_days(store: ReadStore, since_day: str) -> list[SystemDay]:
    with store.read_one() as cur:
        cur.execute(
            "SELECT r.system_id, s.name, r.day, r.executions, r.completed, r.duration_sum"
            " FROM report_system_days r LEFT JOIN systems s ON s.id = r.system_id"
            " WHERE r.day >= ? ORDER BY r.day DESC, s.name",
            (since_day,),
        )
        return [
            SystemDay(
                system_id=r["system_id"],
                system_name=r["name"],
                day=r["day"],
                executions=r["executions"],
                completed=r["completed"],
                success_rate=round(r["completed"] / r["executions"], 4),
                mean_duration_seconds=round(r["duration_sum"] / r["executions"], 3),
            )
            for r in cur.fetchall()
        ]
