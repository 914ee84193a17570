"""The projection of the event log into the read-model tables.

One handler per event type; each sees the cursor of the batch's transaction. The dashboard
counters move with every status change, so reading them never counts rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from orca.domain.index import NameIndex
from orca.domain.job import FINISHED, Execution, Job
from orca.domain.system import System
from orca.domain.user import Session, User
from orca.projections.store import Cursor

Handler = Callable[[Cursor, Any, int], None]

# System fields an update may change, as read-model columns (credentials are never shown).
_SYSTEM_COLUMNS = ("name", "hostname", "port", "username", "description", "is_active")


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` and fixed width, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _bump(cur: Cursor, *changes: tuple[str, float]) -> None:
    for name, delta in changes:
        if delta:
            cur.execute("UPDATE counters SET value = value + ? WHERE name = ?", (delta, name))


def _one(cur: Cursor, sql: str, params: tuple[Any, ...]) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()


# --- systems -------------------------------------------------------------------------------


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
    _bump(cur, ("systems.total", 1), ("systems.active", 1), (f"systems.{e.system_type}", 1))


def _system_updated(cur: Cursor, e: System.Updated, seq: int) -> None:
    system_id = str(e.originator_id)
    row = _one(cur, "SELECT is_active FROM systems WHERE id = ?", (system_id,))
    if row is None:
        return
    changes = {k: v for k, v in e.changes.items() if k in _SYSTEM_COLUMNS}
    sets = ", ".join(f"{column} = ?" for column in changes)
    cur.execute(
        f"UPDATE systems SET {sets}{', ' if sets else ''}updated_at = ? WHERE id = ?",
        (*changes.values(), iso(e.timestamp), system_id),
    )
    if "is_active" in changes and bool(changes["is_active"]) != bool(row["is_active"]):
        _bump(cur, ("systems.active", 1 if changes["is_active"] else -1))
    if "name" in changes:
        cur.execute(
            "UPDATE executions SET system_name = ? WHERE system_id = ?",
            (changes["name"], system_id),
        )


def _host_key_pinned(cur: Cursor, e: System.HostKeyPinned, seq: int) -> None:
    cur.execute(
        "UPDATE systems SET host_key = ?, updated_at = ? WHERE id = ?",
        (e.host_key, iso(e.timestamp), str(e.originator_id)),
    )


def _health_checked(cur: Cursor, e: System.HealthChecked, seq: int) -> None:
    system_id = str(e.originator_id)
    row = _one(cur, "SELECT health_status FROM systems WHERE id = ?", (system_id,))
    if row is None:
        return
    at = iso(e.timestamp)
    cur.execute(
        "UPDATE systems SET health_status = ?, last_health_check = ? WHERE id = ?",
        (e.health_status, at, system_id),
    )
    was, now = row["health_status"] == "healthy", e.health_status == "healthy"
    _bump(cur, ("systems.healthy", int(now) - int(was)))


def _system_deleted(cur: Cursor, e: System.Deleted, seq: int) -> None:
    """The system and its executions leave the read models; the log keeps their history."""
    system_id = str(e.originator_id)
    row = _one(
        cur,
        "SELECT is_active, health_status, system_type FROM systems WHERE id = ?",
        (system_id,),
    )
    if row is None:
        return
    cur.execute(
        "SELECT id, job_id, status, duration_seconds FROM executions WHERE system_id = ?",
        (system_id,),
    )
    for execution in cur.fetchall():
        _forget_execution(cur, execution)
    cur.execute("DELETE FROM executions WHERE system_id = ?", (system_id,))
    cur.execute("DELETE FROM systems WHERE id = ?", (system_id,))
    _bump(
        cur,
        ("systems.total", -1),
        ("systems.active", -int(bool(row["is_active"]))),
        ("systems.healthy", -int(row["health_status"] == "healthy")),
        (f"systems.{row['system_type']}", -1),
    )


def _forget_execution(cur: Cursor, execution: Any) -> None:
    status = execution["status"]
    cur.execute(
        "UPDATE jobs SET n_executions = n_executions - 1, n_started = n_started - ?,"
        " n_finished = n_finished - ?, n_completed = n_completed - ? WHERE id = ?",
        (
            int(status != "pending"),
            int(status in FINISHED),
            int(status == "completed"),
            execution["job_id"],
        ),
    )
    _bump(cur, ("executions.total", -1), (f"executions.{status}", -1))
    if execution["duration_seconds"] is not None:
        _bump(
            cur,
            ("executions.duration_sum", -execution["duration_seconds"]),
            ("executions.duration_count", -1),
        )
    _refresh_job_status(cur, execution["job_id"])


# --- jobs and executions ---------------------------------------------------------------------


def _job_created(cur: Cursor, e: Job.Created, seq: int) -> None:
    cur.execute(
        "INSERT INTO jobs (id, seq, name, command, status, created_by, created_at, scheduled_at,"
        " timeout_seconds, n_executions) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
        (
            str(e.originator_id), seq, e.name, e.command, e.created_by, iso(e.timestamp),
            iso(e.schedule_at) if e.schedule_at else None, e.timeout_seconds, len(e.system_ids),
        ),
    )  # fmt: skip
    _bump(cur, ("jobs.total", 1), ("jobs.pending", 1))


def _job_cancelled(cur: Cursor, e: Job.Cancelled, seq: int) -> None:
    job_id = str(e.originator_id)
    cur.execute("UPDATE jobs SET cancelled = ? WHERE id = ?", (True, job_id))
    _refresh_job_status(cur, job_id)


def _job_status(row: Any) -> str:
    if row["cancelled"]:
        return "cancelled"
    if row["n_finished"] >= row["n_executions"]:
        return "completed" if row["n_completed"] >= row["n_executions"] else "failed"
    return "running" if row["n_started"] > 0 else "pending"


def _refresh_job_status(cur: Cursor, job_id: str) -> None:
    row = _one(
        cur,
        "SELECT status, cancelled, n_executions, n_started, n_finished, n_completed"
        " FROM jobs WHERE id = ?",
        (job_id,),
    )
    if row is None:
        return
    status = _job_status(row)
    if status != row["status"]:
        cur.execute("UPDATE jobs SET status = ? WHERE id = ?", (status, job_id))
        _bump(cur, (f"jobs.{row['status']}", -1), (f"jobs.{status}", 1))


def _execution_created(cur: Cursor, e: Execution.Created, seq: int) -> None:
    system_id = str(e.system_id)
    job_id = str(e.job_id)
    cur.execute(
        "INSERT INTO executions (id, seq, job_id, system_id, system_name, status, scheduled_at)"
        " VALUES (?, ?, ?, ?, COALESCE((SELECT name FROM systems WHERE id = ?), ''), 'pending',"
        " (SELECT scheduled_at FROM jobs WHERE id = ?))",
        (str(e.originator_id), seq, job_id, system_id, system_id, job_id),
    )
    _bump(cur, ("executions.total", 1), ("executions.pending", 1))


def _execution_of(cur: Cursor, execution_id: str) -> Any:
    return _one(
        cur, "SELECT job_id, status, started_at FROM executions WHERE id = ?", (execution_id,)
    )


def _execution_started(cur: Cursor, e: Execution.Started, seq: int) -> None:
    execution_id = str(e.originator_id)
    row = _execution_of(cur, execution_id)
    if row is None:
        return
    cur.execute(
        "UPDATE executions SET status = 'running', started_at = ?, worker_id = ? WHERE id = ?",
        (iso(e.timestamp), e.worker_id, execution_id),
    )
    cur.execute("UPDATE jobs SET n_started = n_started + 1 WHERE id = ?", (row["job_id"],))
    _bump(cur, ("executions.pending", -1), ("executions.running", 1))
    _refresh_job_status(cur, row["job_id"])


def _execution_cancel_requested(cur: Cursor, e: Execution.CancelRequested, seq: int) -> None:
    cur.execute(
        "UPDATE executions SET cancel_requested = ? WHERE id = ?", (True, str(e.originator_id))
    )


def _execution_cancelled(cur: Cursor, e: Execution.Cancelled, seq: int) -> None:
    """A pending execution that will never start."""
    execution_id = str(e.originator_id)
    row = _execution_of(cur, execution_id)
    if row is None:
        return
    cur.execute(
        "UPDATE executions SET status = 'cancelled', completed_at = ?, error_message = ?"
        " WHERE id = ?",
        (iso(e.timestamp), e.reason, execution_id),
    )
    cur.execute("UPDATE jobs SET n_finished = n_finished + 1 WHERE id = ?", (row["job_id"],))
    _bump(cur, ("executions.pending", -1), ("executions.cancelled", 1))
    _refresh_job_status(cur, row["job_id"])


def _execution_finished(cur: Cursor, e: Execution.Finished, seq: int) -> None:
    execution_id = str(e.originator_id)
    row = _execution_of(cur, execution_id)
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
    _bump(cur, (f"executions.{row['status']}", -1), (f"executions.{e.status}", 1))
    if duration is not None:
        _bump(cur, ("executions.duration_sum", duration), ("executions.duration_count", 1))
    _refresh_job_status(cur, row["job_id"])


# --- users and sessions ----------------------------------------------------------------------


def _user_created(cur: Cursor, e: User.Created, seq: int) -> None:
    at = iso(e.timestamp)
    cur.execute(
        "INSERT INTO users (id, seq, username, role, is_active, credentials_version, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        (str(e.originator_id), seq, e.username, e.role, True, at, at),
    )


def _user_changed(sets: str, *values: Any) -> Handler:
    """Handlers for the events that change a user's rights: each ends older sessions."""

    def handler(cur: Cursor, e: Any, seq: int) -> None:
        cur.execute(
            f"UPDATE users SET {sets}, updated_at = ? WHERE id = ?",
            (*(getattr(e, v) if isinstance(v, str) else v for v in values), iso(e.timestamp),
             str(e.originator_id)),
        )  # fmt: skip

    return handler


def _session_created(cur: Cursor, e: Session.Created, seq: int) -> None:
    cur.execute(
        "INSERT INTO sessions (id, user_id, credentials_version, expires_at) VALUES (?, ?, ?, ?)",
        (str(e.originator_id), str(e.user_id), e.credentials_version, iso(e.expires_at)),
    )


def _session_revoked(cur: Cursor, e: Session.Revoked, seq: int) -> None:
    cur.execute("UPDATE sessions SET revoked = ? WHERE id = ?", (True, str(e.originator_id)))


def _ignore(cur: Cursor, e: Any, seq: int) -> None:
    """Events that change nothing the read models show."""


HANDLERS: dict[type[Any], Handler] = {
    System.Created: _system_created,
    System.Updated: _system_updated,
    System.HostKeyPinned: _host_key_pinned,
    System.HealthChecked: _health_checked,
    System.Deleted: _system_deleted,
    Job.Created: _job_created,
    Job.Cancelled: _job_cancelled,
    Execution.Created: _execution_created,
    Execution.Started: _execution_started,
    Execution.CancelRequested: _execution_cancel_requested,
    Execution.Cancelled: _execution_cancelled,
    Execution.Finished: _execution_finished,
    User.Created: _user_created,
    User.PasswordChanged: _user_changed("credentials_version = credentials_version + 1"),
    User.RoleChanged: _user_changed(
        "role = ?, credentials_version = credentials_version + 1", "role"
    ),
    User.Disabled: _user_changed(
        "is_active = ?, credentials_version = credentials_version + 1", False
    ),
    User.Enabled: _user_changed("is_active = ?", True),
    Session.Created: _session_created,
    Session.Refreshed: _ignore,
    Session.Revoked: _session_revoked,
    NameIndex.Created: _ignore,
    NameIndex.Reclaimed: _ignore,
    NameIndex.Released: _ignore,
}
