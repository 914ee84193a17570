"""Reads of the read models, shaped as the API shows them. Never touches the event store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from orca.projections.store import Cursor, ReadStore, Row


class SystemView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    hostname: str
    port: int
    system_type: str
    username: str
    description: str
    is_active: bool
    health_status: str
    created_at: str
    updated_at: str
    last_health_check: str | None
    host_key: str | None


class ExecutionView(msgspec.Struct, kw_only=True):
    id: str
    job_id: str
    system_id: str
    system_name: str
    status: str
    started_at: str | None
    completed_at: str | None
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    error_message: str | None
    duration_seconds: float | None


class JobView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    command: str
    status: str
    created_by: str
    created_at: str
    scheduled_at: str | None
    timeout_seconds: int
    executions: list[ExecutionView]


class UserView(msgspec.Struct, kw_only=True):
    id: str
    username: str
    role: str
    is_active: bool
    created_at: str
    updated_at: str


class SessionState(msgspec.Struct, frozen=True):
    """What every authenticated request checks: is this login still good?"""

    valid: bool
    role: str


class SystemCounts(msgspec.Struct):
    total: int
    active: int
    healthy: int
    linux: int
    windows: int


class JobCounts(msgspec.Struct):
    total: int
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int


class ExecutionCounts(msgspec.Struct):
    total: int
    pending: int
    running: int
    completed: int
    failed: int
    timeout: int
    cancelled: int
    average_duration: float | None


class Counts(msgspec.Struct):
    systems: SystemCounts
    jobs: JobCounts
    executions: ExecutionCounts


_SYSTEM_COLUMNS = (
    "id, name, hostname, port, system_type, username, description, is_active, health_status,"
    " created_at, updated_at, last_health_check, host_key"
)
_JOB_COLUMNS = "id, name, command, status, created_by, created_at, scheduled_at, timeout_seconds"
_EXECUTION_COLUMNS = (
    "id, job_id, system_id, system_name, status, started_at, completed_at, exit_code, stdout,"
    " stderr, stdout_truncated, stderr_truncated, error_message, duration_seconds"
)
# A job's columns named j_*, beside its executions' (none, NULL, if it has none).
_JOB_WITH_EXECUTIONS = (
    "SELECT "
    + ", ".join(f"j.{c} AS j_{c}" for c in _JOB_COLUMNS.split(", "))
    + ", "
    + ", ".join(f"e.{c}" for c in _EXECUTION_COLUMNS.split(", "))
    + " FROM jobs j LEFT JOIN executions e ON e.job_id = j.id WHERE j.id = ? ORDER BY e.seq"
)


def _system(row: Row) -> SystemView:
    return SystemView(
        id=row["id"],
        name=row["name"],
        hostname=row["hostname"],
        port=row["port"],
        system_type=row["system_type"],
        username=row["username"],
        description=row["description"],
        is_active=bool(row["is_active"]),
        health_status=row["health_status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_health_check=row["last_health_check"],
        host_key=row["host_key"],
    )


def _job(row: Row, executions: list[ExecutionView], prefix: str = "") -> JobView:
    return JobView(
        id=row[prefix + "id"],
        name=row[prefix + "name"],
        command=row[prefix + "command"],
        status=row[prefix + "status"],
        created_by=row[prefix + "created_by"],
        created_at=row[prefix + "created_at"],
        scheduled_at=row[prefix + "scheduled_at"],
        timeout_seconds=row[prefix + "timeout_seconds"],
        executions=executions,
    )


def _execution(row: Row) -> ExecutionView:
    return ExecutionView(
        id=row["id"],
        job_id=row["job_id"],
        system_id=row["system_id"],
        system_name=row["system_name"],
        status=row["status"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        exit_code=row["exit_code"],
        stdout=row["stdout"],
        stderr=row["stderr"],
        stdout_truncated=bool(row["stdout_truncated"]),
        stderr_truncated=bool(row["stderr_truncated"]),
        error_message=row["error_message"],
        duration_seconds=row["duration_seconds"],
    )


def _where(filters: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    present = [(clause, value) for clause, value in filters if value is not None]
    if not present:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in present), [v for _, v in present]


class Queries:
    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def get_system(self, system_id: str) -> SystemView | None:
        with self._store.read_one() as cur:
            cur.execute(f"SELECT {_SYSTEM_COLUMNS} FROM systems WHERE id = ?", (system_id,))
            row = cur.fetchone()
        return _system(row) if row is not None else None

    def list_systems(
        self, *, active: bool | None, system_type: str | None, limit: int, offset: int
    ) -> tuple[list[SystemView], int]:
        where, params = _where([("is_active = ?", active), ("system_type = ?", system_type)])
        with self._store.read() as cur:
            cur.execute(f"SELECT COUNT(*) AS n FROM systems{where}", params)
            total = _count(cur)
            cur.execute(
                f"SELECT {_SYSTEM_COLUMNS} FROM systems{where} ORDER BY seq LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            return [_system(r) for r in cur.fetchall()], total

    def get_job(self, job_id: str) -> JobView | None:
        """The job and its executions, read with one statement: one snapshot, one round trip."""
        with self._store.read_one() as cur:
            cur.execute(_JOB_WITH_EXECUTIONS, (job_id,))
            rows = cur.fetchall()
        if not rows:
            return None
        executions = [_execution(r) for r in rows if r["id"] is not None]
        return _job(rows[0], executions, "j_")

    def list_jobs(
        self, *, status: str | None, created_by: str | None, limit: int, offset: int
    ) -> tuple[list[JobView], int]:
        """Newest first."""
        where, params = _where([("status = ?", status), ("created_by = ?", created_by)])
        with self._store.read() as cur:
            if created_by is None:  # kept counted by the projection: no scan of the jobs
                cur.execute(
                    "SELECT value AS n FROM counters WHERE name = ?", (f"jobs.{status or 'total'}",)
                )
            else:
                cur.execute(f"SELECT COUNT(*) AS n FROM jobs{where}", params)
            total = _count(cur)
            cur.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            return self._jobs(cur, cur.fetchall()), total

    @staticmethod
    def _jobs(cur: Cursor, rows: Sequence[Row]) -> list[JobView]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        marks = ", ".join("?" for _ in ids)
        cur.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE job_id IN ({marks}) ORDER BY seq",
            ids,
        )
        by_job: dict[str, list[ExecutionView]] = {i: [] for i in ids}
        for r in cur.fetchall():
            by_job[r["job_id"]].append(_execution(r))
        return [_job(r, by_job[r["id"]]) for r in rows]

    def due_executions(self, now: str, limit: int) -> tuple[list[str], str | None]:
        """Pending executions whose time has come, oldest first, and the next schedule."""
        with self._store.read() as cur:
            cur.execute(
                "SELECT id FROM executions WHERE status = 'pending'"
                " AND (scheduled_at IS NULL OR scheduled_at <= ?) ORDER BY seq LIMIT ?",
                (now, limit),
            )
            due = [r["id"] for r in cur.fetchall()]
            cur.execute(
                "SELECT MIN(scheduled_at) AS next FROM executions"
                " WHERE status = 'pending' AND scheduled_at > ?",
                (now,),
            )
            row = cur.fetchone()
        return due, row["next"] if row is not None else None

    def systems_to_check(self, checked_before: str, limit: int) -> list[str]:
        """Active systems not checked (or, if never checked, not registered) since then."""
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT id FROM systems WHERE is_active = ?"
                " AND COALESCE(last_health_check, created_at) < ? ORDER BY seq LIMIT ?",
                (True, checked_before, limit),
            )
            return [r["id"] for r in cur.fetchall()]

    def unfinished_executions_of(self, system_id: str) -> list[str]:
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT id FROM executions"
                " WHERE system_id = ? AND status IN ('pending', 'running')",
                (system_id,),
            )
            return [r["id"] for r in cur.fetchall()]

    def cancel_requests(self, worker_id: str) -> list[str]:
        """Running executions of this worker that someone asked to cancel."""
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT id FROM executions WHERE status = 'running' AND worker_id = ?"
                " AND cancel_requested = ?",
                (worker_id, True),
            )
            return [r["id"] for r in cur.fetchall()]

    def counts(self) -> Counts:
        with self._store.read_one() as cur:
            cur.execute("SELECT name, value FROM counters")
            c = {r["name"]: r["value"] for r in cur.fetchall()}

        def ints(prefix: str, names: tuple[str, ...]) -> dict[str, int]:
            return {n: int(c.get(f"{prefix}.{n}", 0)) for n in names}

        durations = int(c.get("executions.duration_count", 0))
        return Counts(
            systems=SystemCounts(
                **ints("systems", ("total", "active", "healthy", "linux", "windows"))
            ),
            jobs=JobCounts(
                **ints("jobs", ("total", "pending", "running", "completed", "failed", "cancelled"))
            ),
            executions=ExecutionCounts(
                **ints(
                    "executions",
                    ("total", "pending", "running", "completed", "failed", "timeout", "cancelled"),
                ),
                average_duration=(
                    round(c["executions.duration_sum"] / durations, 3) if durations else None
                ),
            ),
        )

    def session(self, session_id: str, credentials_version: int) -> SessionState:
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT s.revoked, s.expires_at, s.credentials_version, u.credentials_version AS"
                " user_version, u.is_active, u.role FROM sessions s JOIN users u"
                " ON u.id = s.user_id WHERE s.id = ?",
                (session_id,),
            )
            row = cur.fetchone()
        if row is None:
            return SessionState(valid=False, role="")
        valid = (
            not row["revoked"]
            and bool(row["is_active"])
            and row["credentials_version"] == row["user_version"] == credentials_version
        )
        return SessionState(valid=valid, role=row["role"])

    def projection_failures(self) -> int:
        with self._store.read_one() as cur:
            cur.execute("SELECT COUNT(*) AS n FROM projection_failures WHERE projection = 'orca'")
            return _count(cur)

    def list_users(self) -> list[UserView]:
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT id, username, role, is_active, created_at, updated_at FROM users"
                " ORDER BY seq"
            )
            return [
                UserView(
                    id=r["id"],
                    username=r["username"],
                    role=r["role"],
                    is_active=bool(r["is_active"]),
                    created_at=r["created_at"],
                    updated_at=r["updated_at"],
                )
                for r in cur.fetchall()
            ]


def _count(cur: Cursor) -> int:
    row = cur.fetchone()
    return int(row["n"]) if row is not None else 0
