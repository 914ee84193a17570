"""Creating and cancelling jobs: a command for a set of systems, now or at a scheduled time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from orca.application.app import OrcaApplication
from orca.application.systems import Saved
from orca.domain.errors import Conflict, Invalid
from orca.domain.index import NameIndex, index_id
from orca.domain.job import Execution, Job, plan_job
from orca.domain.system import System

DEFAULT_TIMEOUT_SECONDS = 3600
IDEMPOTENCY = "idempotency-key"
CANCEL_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class CreateJob:
    name: str
    command: str
    system_ids: list[UUID]
    schedule_at: datetime | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    idempotency_key: str | None = None


def create_job(app: OrcaApplication, cmd: CreateJob, *, by: str) -> Saved:
    """Save the job and all its executions in one atomic save.

    With an idempotency key, a retry (by the same user, with the same key) returns the job
    the first request created and runs nothing twice.
    """
    key_index = None
    if cmd.idempotency_key is not None:
        key_name = f"{by}\x00{cmd.idempotency_key}"
        existing = app.find(index_id(IDEMPOTENCY, key_name))
        if isinstance(existing, NameIndex) and existing.owner_id is not None:
            return Saved(existing.owner_id, app.recorder.max_notification_id() or 0)
    systems = app.get_many(System, cmd.system_ids)
    for system_id in cmd.system_ids:
        system = systems.get(system_id)
        if system is None or system.is_deleted:
            raise Invalid("system_ids", f"system {system_id} does not exist")
        if not system.is_active:
            raise Invalid("system_ids", f"system {system.name} ({system_id}) is not active")
    job, executions = plan_job(
        name=cmd.name,
        command=cmd.command,
        system_ids=cmd.system_ids,
        created_by=by,
        schedule_at=cmd.schedule_at,
        timeout_seconds=cmd.timeout_seconds,
    )
    if cmd.idempotency_key is not None:
        key_index = NameIndex(kind=IDEMPOTENCY, name=key_name, owner_id=job.id)
    try:
        position = app.commit(
            [*([key_index] if key_index else []), job, *executions],
            conflict="a request with this Idempotency-Key is being processed",
        )
    except Conflict:
        if key_index is None:
            # Every aggregate saved was new: only this very save, retried by the library after
            # its answer was lost (the database went away as it committed), can have been first.
            return Saved(job.id, app.recorder.max_notification_id() or 0)
        # The same key won a race a moment ago: answer with that request's job.
        winner = app.get(NameIndex, key_index.id, "idempotency key")
        assert winner.owner_id is not None
        return Saved(winner.owner_id, app.recorder.max_notification_id() or 0)
    return Saved(job.id, position)


def cancel_job(app: OrcaApplication, job_id: UUID, *, by: str) -> int:
    """Pending executions are cancelled at once; running ones are killed by their workers.

    A worker may claim an execution while we decide: the save then conflicts, and we look
    again at the newer state.
    """
    for _ in range(CANCEL_ATTEMPTS):
        job = app.get(Job, job_id, "job")
        executions = [app.get(Execution, e, "execution") for e in job.execution_ids]
        if job.cancelled_by is not None:
            raise Conflict(f"job {job_id} is already cancelled")
        if all(e.is_finished for e in executions):
            raise Conflict(f"job {job_id} has already finished")
        job.cancel(by=by)
        for execution in executions:
            execution.cancel(reason=f"job cancelled by {by}")
        try:
            return app.commit([job, *executions], conflict="job changed while cancelling")
        except Conflict:
            continue
    raise Conflict(f"job {job_id} kept changing while cancelling; try again")
