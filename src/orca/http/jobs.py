"""/api/jobs: run a command on systems, and follow what it did."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application.jobs import CreateJob, cancel_job, create_job
from orca.application.users import Principal
from orca.http.common import (
    choice_param,
    found,
    json,
    page,
    path_id,
    remembered,
    services,
    settle,
    settled,
    text_param,
)
from orca.http.errors import FieldError, ValidationFailed
from orca.http.schemas import IdempotencyKey, JobCreate, JobList, Message, decode
from orca.projections.queries import JobView

_job_create = msgspec.json.Decoder(JobCreate)
JOB_STATUSES = frozenset({"pending", "running", "completed", "failed", "cancelled"})


def _schedule(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    if at.tzinfo is None:
        message = "must include a UTC offset, e.g. 2025-01-15T15:00:00Z"
        raise ValidationFailed(
            f"invalid schedule_at: {message}", [FieldError(field="schedule_at", message=message)]
        )
    if at <= datetime.now(UTC):
        message = "is in the past"
        raise ValidationFailed(
            f"invalid schedule_at: {message}", [FieldError(field="schedule_at", message=message)]
        )
    return at.astimezone(UTC)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    try:
        return msgspec.convert(key, IdempotencyKey)
    except msgspec.ValidationError:
        message = "must be 1 to 255 printable characters"
        raise ValidationFailed(
            f"invalid Idempotency-Key header: {message}",
            [FieldError(field="Idempotency-Key", message=message)],
        ) from None


async def create(request: Request, principal: Principal) -> Response:
    body = decode(await request.body(), _job_create)
    command = CreateJob(
        name=body.name,
        command=body.command,
        system_ids=body.system_ids,
        schedule_at=_schedule(body.schedule_at),
        timeout_seconds=body.timeout_seconds,
        idempotency_key=_idempotency_key(request),
    )
    s = services(request)

    def create_and_read() -> tuple[str, JobView | None]:  # in one trip to the thread pool
        saved = create_job(s.app, command, by=principal.username)
        settled(s, saved.position)
        return str(saved.id), s.queries.get_job(str(saved.id))

    job_id, view = await run_in_threadpool(create_and_read)
    return json(found(view, "job", job_id), status=201)


async def list_jobs(request: Request, principal: Principal) -> Response:
    limit, offset = page(request)
    status = choice_param(request, "status", JOB_STATUSES)
    created_by = text_param(request, "created_by")
    queries = services(request).queries

    def read() -> JobList:
        jobs, total = queries.list_jobs(
            status=status, created_by=created_by, limit=limit, offset=offset
        )
        return JobList(jobs=jobs, total=total, limit=limit, offset=offset)

    return await remembered(request, ("jobs", status, created_by, limit, offset), read)


async def get_job(request: Request, principal: Principal) -> Response:
    job_id = path_id(request, "job_id")
    queries = services(request).queries
    return await remembered(
        request, ("job", job_id), lambda: queries.get_job(job_id), f"job {job_id} not found"
    )


async def cancel(request: Request, principal: Principal) -> Response:
    job_id = path_id(request, "job_id")
    s = services(request)
    position = await run_in_threadpool(cancel_job, s.app, UUID(job_id), by=principal.username)
    await settle(request, position)
    return json(Message(message="Job cancelled successfully"))
