"""A reporting read model built only from the log: per system and day, how many executions
ran, how many completed, and how long they took.

It has its own position (``orca-reports``), so an installation that adds it fills it from
history on the first start, while everything else keeps running.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from orca.domain.job import Execution
from orca.projections.store import Cursor, ReadStore
from orca.projections.views import Handler, iso

NAME = "orca-reports"


def _created(cur: Cursor, e: Execution.Created, seq: int) -> None:
    cur.execute(
        "INSERT INTO report_executions (id, system_id) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
        (str(e.originator_id), str(e.system_id)),
    )


def _started(cur: Cursor, e: Execution.Started, seq: int) -> None:
    cur.execute(
        "UPDATE report_executions SET started_at = ? WHERE id = ?",
        (iso(e.timestamp), str(e.originator_id)),
    )


def _finished(cur: Cursor, e: Execution.Finished, seq: int) -> None:
    cur.execute(
        "SELECT system_id, started_at FROM report_executions WHERE id = ?",
        (str(e.originator_id),),
    )
    row = cur.fetchone()
    if row is None or row["started_at"] is None:
        return
    started = datetime.fromisoformat(row["started_at"])
    duration = max(0.0, (e.timestamp - started).total_seconds())
    cur.execute(
        "INSERT INTO report_system_days (system_id, day, executions, completed, duration_sum)"
        " VALUES (?, ?, 1, ?, ?) ON CONFLICT (system_id, day) DO UPDATE SET"
        " executions = report_system_days.executions + 1,"
        " completed = report_system_days.completed + excluded.completed,"
        " duration_sum = report_system_days.duration_sum + excluded.duration_sum",
        (row["system_id"], iso(e.timestamp)[:10], int(e.status == "completed"), duration),
    )
    cur.execute("DELETE FROM report_executions WHERE id = ?", (str(e.originator_id),))


HANDLERS: dict[type[Any], Handler] = {
    Execution.Created: _created,
    Execution.Started: _started,
    Execution.Finished: _finished,
}


class SystemDay(msgspec.Struct):
    system_id: str
    system_name: str | None
    day: str
    executions: int
    completed: int
    success_rate: float
    mean_duration_seconds: float


def system_days(store: ReadStore, since_day: str) -> list[SystemDay]:
    with store.read() as cur:
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
