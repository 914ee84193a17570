"""Creating jobs: a command for a set of systems, now or at a scheduled time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from orca.application.app import OrcaApplication
from orca.application.systems import Saved
from orca.domain.errors import Invalid
from orca.domain.job import plan_job
from orca.domain.system import System

DEFAULT_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class CreateJob:
    name: str
    command: str
    system_ids: list[UUID]
    schedule_at: datetime | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS


def create_job(app: OrcaApplication, cmd: CreateJob, *, by: str) -> Saved:
    """Save the job and all its executions in one atomic save."""
    for system_id in cmd.system_ids:
        if not isinstance(app.find(system_id), System):
            raise Invalid("system_ids", f"system {system_id} does not exist")
    job, executions = plan_job(
        name=cmd.name,
        command=cmd.command,
        system_ids=cmd.system_ids,
        created_by=by,
        schedule_at=cmd.schedule_at,
        timeout_seconds=cmd.timeout_seconds,
    )
    return Saved(job.id, app.commit([job, *executions], conflict="job was saved concurrently"))
