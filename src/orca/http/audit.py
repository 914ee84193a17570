"""GET /api/events: the event log, in order, for auditors (secrets never shown)."""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application.audit import AuditEntry, read_log
from orca.application.users import Principal
from orca.http.common import int_param, json, services, text_param

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
