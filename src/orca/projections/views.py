"""The projection of the event log into the read-model tables.

One handler per event type; each reads and changes rows through the batch's ``Rows``. The
dashboard counters move with every status change, so reading them never counts rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from orca.domain.index import NameIndex
from orca.domain.job import FINISHED, Execution, Job
from orca.domain.system import System
from orca.domain.user import Session, User
from orca.projections.rows import Handler, Projection, Row, Rows, ignore

# System fields an update may change, as read-model columns (credentials are never shown).
_SYSTEM_COLUMNS = ("name", "hostname", "port", "username", "description", "is_active")


_json = msgspec.json.Encoder().encode


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` and fixed width, so that text order is time order."""
    if moment.tzinfo is UTC and moment.microsecond:
        # Exactly what msgspec writes then (it leaves out a zero fraction), 5x as fast.
        return _json(moment)[1:-1].decode()
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


# --- systems -------------------------------------------------------------------------------


def _system_created(rows: Rows, e: System.Created, seq: int) -> None:
    at = iso(e.timestamp)
    rows.insert(
        "systems",
        {
            "id": str(e.originator_id), "seq": seq, "name": e.name, "hostname": e.hostname,
            "port": e.port, "system_type": e.system_type, "username": e.username,
            "description": e.description, "is_active": True, "health_status": "unknown",
            "host_key": e.host_key, "created_at": at, "updated_at": at,
            "last_health_check": None,
        },
    )  # fmt: skip
    rows.bump(("systems.total", 1), ("systems.active", 1), (f"systems.{e.system_type}", 1))


def _system_updated(rows: Rows, e: System.Updated, seq: int) -> None:
    system_id = str(e.originator_id)
    row = rows.get("systems", system_id)
    if row is None:
        return
    changes = {k: v for k, v in e.changes.items() if k in _SYSTEM_COLUMNS}
    if "is_active" in changes and bool(changes["is_active"]) != bool(row["is_active"]):
        rows.bump(("systems.active", 1 if changes["is_active"] else -1))
    rows.update("systems", system_id, **changes, updated_at=iso(e.timestamp))
    if "name" in changes:
        rows.execute(
            "UPDATE executions SET system_name = ? WHERE system_id = ?",
            (changes["name"], system_id),
        )


def _host_key_pinned(rows: Rows, e: System.HostKeyPinned, seq: int) -> None:
    rows.update("systems", str(e.originator_id), host_key=e.host_key, updated_at=iso(e.timestamp))


def _health_checked(rows: Rows, e: System.HealthChecked, seq: int) -> None:
    system_id = str(e.originator_id)
    row = rows.get("systems", system_id)
    if row is None:
        return
    was, now = row["health_status"] == "healthy", e.health_status == "healthy"
    rows.update(
        "systems", system_id, health_status=e.health_status, last_health_check=iso(e.timestamp)
    )
    rows.bump(("systems.healthy", int(now) - int(was)))


def _system_deleted(rows: Rows, e: System.Deleted, seq: int) -> None:
    """The system and its executions leave the read models; the log keeps their history."""
    system_id = str(e.originator_id)
    row = rows.get("systems", system_id)
    if row is None:
        return
    for execution in rows.select(
        "SELECT id, job_id, status, duration_seconds FROM executions WHERE system_id = ?",
        (system_id,),
    ):
        _forget_execution(rows, execution)
    rows.execute("DELETE FROM executions WHERE system_id = ?", (system_id,))
    rows.delete("systems", system_id)
    rows.bump(
        ("systems.total", -1),
        ("systems.active", -int(bool(row["is_active"]))),
        ("systems.healthy", -int(row["health_status"] == "healthy")),
        (f"systems.{row['system_type']}", -1),
    )


def _forget_execution(rows: Rows, execution: Row) -> None:
    status = execution["status"]
    job = rows.get("jobs", execution["job_id"])
    if job is not None:
        rows.update(
            "jobs",
            execution["job_id"],
            n_executions=job["n_executions"] - 1,
            n_started=job["n_started"] - int(status != "pending"),
            n_finished=job["n_finished"] - int(status in FINISHED),
            n_completed=job["n_completed"] - int(status == "completed"),
        )
    rows.bump(("executions.total", -1), (f"executions.{status}", -1))
    if execution["duration_seconds"] is not None:
        rows.bump(
            ("executions.duration_sum", -execution["duration_seconds"]),
            ("executions.duration_count", -1),
        )
    _refresh_job_status(rows, execution["job_id"])


# --- jobs and executions ---------------------------------------------------------------------


# New rows start as copies of these, with what is their own set after: a copy of a dict is
# three times as fast to make as a literal of as many keys, which every created job and
# execution of a rebuild paid.
_NEW_JOB: Row = {
    "id": None, "seq": None, "name": None, "command": None, "status": "pending",
    "created_by": None, "created_at": None, "scheduled_at": None, "timeout_seconds": None,
    "n_executions": None, "n_started": 0, "n_finished": 0, "n_completed": 0, "cancelled": False,
}  # fmt: skip
_NEW_EXECUTION: Row = {
    "id": None, "seq": None, "job_id": None, "system_id": None, "system_name": None,
    "status": "pending", "scheduled_at": None, "worker_id": None, "started_at": None,
    "completed_at": None, "exit_code": None, "stdout": "", "stderr": "",
    "stdout_truncated": False, "stderr_truncated": False, "error_message": None,
    "duration_seconds": None, "cancel_requested": False,
}  # fmt: skip


def _job_created(rows: Rows, e: Job.Created, seq: int) -> None:
    job = _NEW_JOB.copy()
    job["id"] = str(e.originator_id)
    job["seq"] = seq
    job["name"] = e.name
    job["command"] = e.command
    job["created_by"] = e.created_by
    job["created_at"] = iso(e.timestamp)
    job["scheduled_at"] = iso(e.schedule_at) if e.schedule_at else None
    job["timeout_seconds"] = e.timeout_seconds
    job["n_executions"] = len(e.system_ids)
    rows.insert("jobs", job)
    rows.bump(("jobs.total", 1), ("jobs.pending", 1))
    rows.load("systems", [str(s) for s in e.system_ids])  # for the job's executions, next


def _job_cancelled(rows: Rows, e: Job.Cancelled, seq: int) -> None:
    job_id = str(e.originator_id)
    rows.update("jobs", job_id, cancelled=True)
    _refresh_job_status(rows, job_id)


def _job_status(row: Row) -> str:
    if row["cancelled"]:
        return "cancelled"
    if row["n_finished"] >= row["n_executions"]:
        return "completed" if row["n_completed"] >= row["n_executions"] else "failed"
    return "running" if row["n_started"] > 0 else "pending"


def _refresh_job_status(rows: Rows, job_id: str) -> None:
    row = rows.get("jobs", job_id)
    if row is None:
        return
    was, status = row["status"], _job_status(row)
    if status != was:
        rows.update("jobs", job_id, status=status)
        rows.bump((f"jobs.{was}", -1), (f"jobs.{status}", 1))


def _execution_created(rows: Rows, e: Execution.Created, seq: int) -> None:
    system_id = str(e.system_id)
    job_id = str(e.job_id)
    system = rows.get("systems", system_id)
    job = rows.get("jobs", job_id)
    execution = _NEW_EXECUTION.copy()
    execution["id"] = str(e.originator_id)
    execution["seq"] = seq
    execution["job_id"] = job_id
    execution["system_id"] = system_id
    execution["system_name"] = system["name"] if system else ""
    execution["scheduled_at"] = job["scheduled_at"] if job else None
    rows.insert("executions", execution)
    rows.bump(("executions.total", 1), ("executions.pending", 1))


def _move_execution(
    rows: Rows, execution_id: str, status: str, steps: dict[str, int], **values: Any
) -> None:
    """An execution goes to ``status``: its row, its job's progress and status, the counters."""
    row = rows.get("executions", execution_id)
    if row is None:
        return
    was, job_id = row["status"], row["job_id"]  # the update may change ``row`` in place
    rows.update("executions", execution_id, status=status, **values)
    _job_progress(rows, job_id, **steps)
    rows.bump((f"executions.{was}", -1), (f"executions.{status}", 1))
    _refresh_job_status(rows, job_id)


def _execution_started(rows: Rows, e: Execution.Started, seq: int) -> None:
    _move_execution(
        rows, str(e.originator_id), "running", {"n_started": 1},
        started_at=iso(e.timestamp), worker_id=e.worker_id,
    )  # fmt: skip


def _job_progress(rows: Rows, job_id: str, **steps: int) -> None:
    job = rows.get("jobs", job_id)
    if job is not None:
        rows.update("jobs", job_id, **{name: job[name] + step for name, step in steps.items()})


def _execution_cancel_requested(rows: Rows, e: Execution.CancelRequested, seq: int) -> None:
    rows.update("executions", str(e.originator_id), cancel_requested=True)


def _execution_cancelled(rows: Rows, e: Execution.Cancelled, seq: int) -> None:
    """A pending execution that will never start."""
    _move_execution(
        rows, str(e.originator_id), "cancelled", {"n_finished": 1},
        completed_at=iso(e.timestamp), error_message=e.reason,
    )  # fmt: skip


def _execution_finished(rows: Rows, e: Execution.Finished, seq: int) -> None:
    execution_id = str(e.originator_id)
    row = rows.get("executions", execution_id)
    if row is None:
        return
    started = row["started_at"]
    duration = (
        round((e.timestamp - datetime.fromisoformat(started)).total_seconds(), 3)
        if started
        else None
    )
    _move_execution(
        rows, execution_id, e.status,
        {"n_finished": 1, "n_completed": int(e.status == "completed")},
        completed_at=iso(e.timestamp), exit_code=e.exit_code,
        stdout=e.stdout, stderr=e.stderr, stdout_truncated=e.stdout_truncated,
        stderr_truncated=e.stderr_truncated, error_message=e.error_message,
        duration_seconds=duration,
    )  # fmt: skip
    if duration is not None:
        rows.bump(("executions.duration_sum", duration), ("executions.duration_count", 1))


# --- users and sessions ----------------------------------------------------------------------


def _user_created(rows: Rows, e: User.Created, seq: int) -> None:
    at = iso(e.timestamp)
    rows.insert(
        "users",
        {
            "id": str(e.originator_id), "seq": seq, "username": e.username, "role": e.role,
            "is_active": True, "credentials_version": 0, "created_at": at, "updated_at": at,
        },
    )  # fmt: skip


def _change_user(rows: Rows, e: Any, *, ends_sessions: bool, **values: Any) -> None:
    """A change of a user's rights ends their older sessions."""
    user_id = str(e.originator_id)
    user = rows.get("users", user_id)
    if user is None:
        return
    if ends_sessions:
        values["credentials_version"] = user["credentials_version"] + 1
    rows.update("users", user_id, **values, updated_at=iso(e.timestamp))


def _password_changed(rows: Rows, e: User.PasswordChanged, seq: int) -> None:
    _change_user(rows, e, ends_sessions=True)


def _role_changed(rows: Rows, e: User.RoleChanged, seq: int) -> None:
    _change_user(rows, e, ends_sessions=True, role=e.role)


def _user_disabled(rows: Rows, e: User.Disabled, seq: int) -> None:
    _change_user(rows, e, ends_sessions=True, is_active=False)


def _user_enabled(rows: Rows, e: User.Enabled, seq: int) -> None:
    _change_user(rows, e, ends_sessions=False, is_active=True)


def _session_created(rows: Rows, e: Session.Created, seq: int) -> None:
    rows.insert(
        "sessions",
        {
            "id": str(e.originator_id), "user_id": str(e.user_id),
            "credentials_version": e.credentials_version, "expires_at": iso(e.expires_at),
            "revoked": False,
        },
    )  # fmt: skip


def _session_revoked(rows: Rows, e: Session.Revoked, seq: int) -> None:
    rows.update("sessions", str(e.originator_id), revoked=True)


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
    User.PasswordChanged: _password_changed,
    User.RoleChanged: _role_changed,
    User.Disabled: _user_disabled,
    User.Enabled: _user_enabled,
    Session.Created: _session_created,
    Session.Refreshed: ignore,
    Session.Revoked: _session_revoked,
    NameIndex.Created: ignore,
    NameIndex.Reclaimed: ignore,
    NameIndex.Released: ignore,
}

# The tables a session check reads: a batch that writes them tells the API processes.
ACCOUNT_TABLES = frozenset({"users", "sessions"})

READ_MODELS = Projection(
    name="orca",
    handlers=HANDLERS,
    tables=(
        "systems", "jobs", "executions", "users", "sessions", "counters", "projection_failures",
    ),
    own_rows={
        System.Updated: "systems", System.HostKeyPinned: "systems",
        System.HealthChecked: "systems", System.Deleted: "systems",
        Job.Cancelled: "jobs",
        Execution.Started: "executions", Execution.CancelRequested: "executions",
        Execution.Cancelled: "executions", Execution.Finished: "executions",
    },
)  # fmt: skip
