"""A command to run on a set of systems, and each run of it on one system."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from orca.domain.errors import Conflict, Invalid

ExecutionStatus = Literal["pending", "running", "completed", "failed", "timeout", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "timeout", "cancelled"})


class Job(Aggregate):
    """What to run, where, and when; who asked for it."""

    TOPIC = "orca.Job"

    class Created(Aggregate.Created):
        TOPIC = "orca.Job.Created"
        name: str
        command: str
        system_ids: list[UUID]
        created_by: str
        schedule_at: datetime | None
        timeout_seconds: int

    def __init__(
        self,
        name: str,
        command: str,
        system_ids: list[UUID],
        created_by: str,
        schedule_at: datetime | None,
        timeout_seconds: int,
    ) -> None:
        self.name = name
        self.command = command
        self.system_ids = system_ids
        self.created_by = created_by
        self.schedule_at = schedule_at
        self.timeout_seconds = timeout_seconds
        self.cancelled_by: str | None = None

    class Cancelled(Aggregate.Event):
        TOPIC = "orca.Job.Cancelled"
        cancelled_by: str

        def apply(self, aggregate: Job) -> None:
            aggregate.cancelled_by = self.cancelled_by

    def cancel(self, *, by: str) -> None:
        if self.cancelled_by is not None:
            raise Conflict(f"job {self.id} is already cancelled")
        self.trigger_event(self.Cancelled, cancelled_by=by)

    @property
    def execution_ids(self) -> list[UUID]:
        return [Execution.create_id(self.id, s) for s in self.system_ids]


class Execution(Aggregate):
    """One run of a job's command on one system.

    Its own aggregate so that the executions of one job start and finish concurrently
    without contending for one aggregate version.
    """

    TOPIC = "orca.Execution"

    class Created(Aggregate.Created):
        TOPIC = "orca.Execution.Created"
        job_id: UUID
        system_id: UUID

    class Started(Aggregate.Event):
        """A worker claimed the execution; its lease lasts until ``lease_until``."""

        TOPIC = "orca.Execution.Started"
        worker_id: str
        lease_until: datetime

        def apply(self, aggregate: Execution) -> None:
            aggregate.status = "running"
            aggregate.worker_id = self.worker_id

    class Finished(Aggregate.Event):
        TOPIC = "orca.Execution.Finished"
        status: str
        exit_code: int | None
        stdout: str
        stderr: str
        stdout_truncated: bool
        stderr_truncated: bool
        error_message: str | None

        def apply(self, aggregate: Execution) -> None:
            aggregate.status = self.status  # type: ignore[assignment]

    class Cancelled(Aggregate.Event):
        """A pending execution will never start."""

        TOPIC = "orca.Execution.Cancelled"
        reason: str

        def apply(self, aggregate: Execution) -> None:
            aggregate.status = "cancelled"

    class CancelRequested(Aggregate.Event):
        """A running execution is to be killed by the worker that runs it."""

        TOPIC = "orca.Execution.CancelRequested"
        reason: str

        def apply(self, aggregate: Execution) -> None:
            aggregate.cancel_requested = True

    def __init__(self, job_id: UUID, system_id: UUID) -> None:
        self.job_id = job_id
        self.system_id = system_id
        self.status: ExecutionStatus = "pending"
        self.worker_id: str | None = None
        self.cancel_requested = False

    @classmethod
    def create_id(cls, job_id: UUID, system_id: UUID) -> UUID:
        """One execution per job and system, so its id follows from theirs."""
        return uuid5(job_id, str(system_id))

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def start(self, worker_id: str, lease_until: datetime) -> None:
        if self.status != "pending":
            raise Conflict(f"execution {self.id} is {self.status}; only a pending one can start")
        self.trigger_event(self.Started, worker_id=worker_id, lease_until=lease_until)

    def cancel(self, reason: str) -> None:
        """Pending: cancelled at once. Running: its worker is asked to kill it. Finished: no-op."""
        if self.status == "pending":
            self.trigger_event(self.Cancelled, reason=reason)
        elif self.status == "running" and not self.cancel_requested:
            self.trigger_event(self.CancelRequested, reason=reason)

    def finish(
        self,
        status: ExecutionStatus,
        *,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        stdout_truncated: bool = False,
        stderr_truncated: bool = False,
        error_message: str | None = None,
    ) -> None:
        if status not in FINISHED:
            raise Invalid("status", f"{status!r} is not a finished status")
        if self.status != "running":
            raise Conflict(f"execution {self.id} is {self.status}; only a running one can finish")
        self.trigger_event(
            self.Finished,
            status=status,
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=stdout_truncated,
            stderr_truncated=stderr_truncated,
            error_message=error_message,
        )


def plan_job(
    *,
    name: str,
    command: str,
    system_ids: list[UUID],
    created_by: str,
    schedule_at: datetime | None,
    timeout_seconds: int,
) -> tuple[Job, list[Execution]]:
    """A new job and one pending execution per system, to be saved together."""
    if not system_ids:
        raise Invalid("system_ids", "a job needs at least one system")
    if len(set(system_ids)) != len(system_ids):
        raise Invalid("system_ids", "a system is listed more than once")
    job = Job(
        name=name,
        command=command,
        system_ids=system_ids,
        created_by=created_by,
        schedule_at=schedule_at,
        timeout_seconds=timeout_seconds,
    )
    return job, [Execution(job_id=job.id, system_id=s) for s in system_ids]
