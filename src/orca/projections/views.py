"""The projection of the event log into the systems, jobs and executions tables.

One handler per event type; each sees the cursor of the batch's transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orca.domain.index import NameIndex
from orca.domain.job import Execution, Job
from orca.domain.system import System
from orca.domain.user import User
from orca.projections.store import Cursor

Handler = Callable[[Cursor, Any, int], None]


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` and fixed width, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _system_created(cur: Cursor, e: System.Created, seq: int) -> None:
    at = iso(e.timestamp)
    cur.execute(
        "INSERT INTO systems (id, seq, name, hostname, port, system_type, username, description,"
        " is_active, health_status, host_key, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'unknown', ?, ?, ?)",
        (
            str(e.originator_id), seq, e.name, e.hostname, e.port, e.system_type, e.username,
            e.description, True, e.host_key, at, at,
        ),
    )  # fmt: skip


def _host_key_pinned(cur: Cursor, e: System.HostKeyPinned, seq: int) -> None:
    cur.execute(
        "UPDATE systems SET host_key = ?, updated_at = ? WHERE id = ?",
        (e.host_key, iso(e.timestamp), str(e.originator_id)),
    )


def _job_created(cur: Cursor, e: Job.Created, seq: int) -> None:
    cur.execute(
        "INSERT INTO jobs (id, seq, name, command, status, created_by, created_at, scheduled_at,"
        " timeout_seconds, n_executions) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        (
            str(e.originator_id), seq, e.name, e.command, e.created_by, iso(e.timestamp),
            iso(e.schedule_at) if e.schedule_at else None, e.timeout_seconds, len(e.system_ids),
        ),
    )  # fmt: skip


def _execution_created(cur: Cursor, e: Execution.Created, seq: int) -> None:
    system_id = str(e.system_id)
    job_id = str(e.job_id)
    cur.execute(
        "INSERT INTO executions (id, seq, job_id, system_id, system_name, status, scheduled_at)"
        " VALUES (?, ?, ?, ?, COALESCE((SELECT name FROM systems WHERE id = ?), ''), 'pending',"
        " (SELECT scheduled_at FROM jobs WHERE id = ?))",
        (str(e.originator_id), seq, job_id, system_id, system_id, job_id),
    )


def _refresh_job_status(cur: Cursor, job_id: str) -> None:
    cur.execute(
        "UPDATE jobs SET status = CASE"
        " WHEN cancelled THEN 'cancelled'"
        " WHEN n_finished = n_executions THEN"
        "  CASE WHEN n_completed = n_executions THEN 'completed' ELSE 'failed' END"
        " WHEN n_started > 0 THEN 'running'"
        " ELSE 'pending' END"
        " WHERE id = ?",
        (job_id,),
    )


def _job_of(cur: Cursor, execution_id: str) -> Any:
    cur.execute("SELECT job_id, started_at FROM executions WHERE id = ?", (execution_id,))
    return cur.fetchone()


def _execution_started(cur: Cursor, e: Execution.Started, seq: int) -> None:
    execution_id = str(e.originator_id)
    cur.execute(
        "UPDATE executions SET status = 'running', started_at = ?, worker_id = ? WHERE id = ?",
        (iso(e.timestamp), e.worker_id, execution_id),
    )
    row = _job_of(cur, execution_id)
    if row is not None:
        cur.execute("UPDATE jobs SET n_started = n_started + 1 WHERE id = ?", (row["job_id"],))
        _refresh_job_status(cur, row["job_id"])


def _execution_finished(cur: Cursor, e: Execution.Finished, seq: int) -> None:
    execution_id = str(e.originator_id)
    row = _job_of(cur, execution_id)
    if row is None:
        return
    started = row["started_at"]
    duration = (
        round((e.timestamp - datetime.fromisoformat(started)).total_seconds(), 3)
        if started
        else None
    )
    cur.execute(
        "UPDATE executions SET status = ?, completed_at = ?, exit_code = ?, stdout = ?,"
        " stderr = ?, stdout_truncated = ?, stderr_truncated = ?, error_message = ?,"
        " duration_seconds = ? WHERE id = ?",
        (
            e.status, iso(e.timestamp), e.exit_code, e.stdout, e.stderr, e.stdout_truncated,
            e.stderr_truncated, e.error_message, duration, execution_id,
        ),
    )  # fmt: skip
    cur.execute(
        "UPDATE jobs SET n_finished = n_finished + 1, n_completed = n_completed + ? WHERE id = ?",
        (1 if e.status == "completed" else 0, row["job_id"]),
    )
    _refresh_job_status(cur, row["job_id"])


def _ignore(cur: Cursor, e: Any, seq: int) -> None:
    """Events that change nothing the read models show."""


HANDLERS: dict[type[Any], Handler] = {
    System.Created: _system_created,
    System.HostKeyPinned: _host_key_pinned,
    Job.Created: _job_created,
    Execution.Created: _execution_created,
    Execution.Started: _execution_started,
    Execution.Finished: _execution_finished,
    NameIndex.Created: _ignore,
    NameIndex.Reclaimed: _ignore,
    NameIndex.Released: _ignore,
    User.Created: _ignore,
}
