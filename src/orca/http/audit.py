"""GET /api/events: the event log, in order, for auditors (secrets never shown)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application.audit import AuditEntry, history, read_log
from orca.application.users import Principal
from orca.http.auth import Endpoint
from orca.http.common import int_param, json, path_id, services, text_param
from orca.http.errors import FieldError, ResourceNotFound, ValidationFailed

MAX_EVENTS = 1000


class AuditPage(msgspec.Struct):
    events: list[AuditEntry]
    next_after: int
    """Pass as ``after`` to continue; equal to ``after`` when nothing newer exists."""


async def list_events(request: Request, principal: Principal) -> Response:
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, MAX_EVENTS)
    aggregate_id = text_param(request, "aggregate_id", 64)
    event_type = text_param(request, "type", 128)
    entries, position = await run_in_threadpool(
        lambda: read_log(
            services(request).app,
            after=after,
            limit=limit,
            aggregate_id=aggregate_id,
            types=[event_type] if event_type else [],
        )
    )
    return json(
        AuditPage(
            events=entries,
            next_after=position,
        )
    )


def _at(request: Request) -> datetime | int | None:
    raw = request.query_params.get("at")
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        message = "must be a version number or an ISO 8601 time with a UTC offset"
        raise ValidationFailed(
            f"invalid query parameter at: {message}", [FieldError(field="at", message=message)]
        )
    return moment


def _history(kind: str, param: str) -> Endpoint:
    async def endpoint(request: Request, principal: Principal) -> Response:
        aggregate_id = path_id(request, param)
        result = await run_in_threadpool(
            history, services(request).app, UUID(aggregate_id), _at(request)
        )
        if result is None or (
            result.events and not result.events[0].event_type.startswith(f"orca.{kind}.")
        ):
            raise ResourceNotFound(f"{kind.lower()} {aggregate_id} not found")
        return json(result)

    endpoint.__name__ = f"{kind.lower()}_history"
    return endpoint


job_history = _history("Job", "job_id")
system_history = _history("System", "system_id")
