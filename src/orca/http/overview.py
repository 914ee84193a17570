"""/health, /health/detailed and /api/dashboard."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca import __version__
from orca.application.users import Principal
from orca.http.cache import UntilViewsMove
from orca.http.common import int_param, json, services
from orca.http.schemas import (
    Components,
    Dashboard,
    DashboardUser,
    DatabaseHealth,
    Engine,
    Health,
    HealthDetailed,
    Projections,
)
from orca.projections.queries import Counts
from orca.projections.reports import SystemDay, system_days

SERVICE_NAME = "orca-job-orchestrator"


async def health(request: Request) -> Response:
    return json(Health(status="healthy", service=SERVICE_NAME, version=__version__))


def _database(request: Request) -> DatabaseHealth:
    s = services(request)
    backend = "postgresql" if s.settings.postgres else "sqlite"
    started = time.perf_counter()
    try:
        connections = s.store.active_connections()
    except Exception as error:
        return DatabaseHealth(
            status="unhealthy",
            response_time_ms=None,
            active_connections=None,
            backend=backend,
            error=type(error).__name__,
        )
    return DatabaseHealth(
        status="healthy",
        response_time_ms=round((time.perf_counter() - started) * 1000, 2),
        active_connections=connections,
        backend=backend,
    )


def _projections(request: Request) -> Projections:
    s = services(request)
    return Projections(lag_events=s.projection_lag(), failed_events=s.queries.projection_failures())


async def health_detailed(request: Request) -> Response:
    s = services(request)
    database = await run_in_threadpool(_database, request)
    engine = "unknown"
    projections = None
    if database.status == "healthy":
        state = await run_in_threadpool(s.workers.engine)
        engine = "healthy" if state.workers else "unavailable"
        projections = await run_in_threadpool(_projections, request)
    healthy = database.status == "healthy"
    body = HealthDetailed(
        status="healthy" if healthy else "unhealthy",
        service=SERVICE_NAME,
        version=__version__,
        database=database,
        components=Components(
            database=database.status,
            execution_engine=engine,
            projections=(
                "unknown"
                if projections is None
                else "degraded"
                if projections.failed_events
                else "healthy"
            ),
        ),
        projections=projections,
    )
    return json(body, status=200 if healthy else 503)


async def dashboard(request: Request, principal: Principal) -> Response:
    s = services(request)
    remembered: UntilViewsMove[Counts] = request.app.state.counts
    counts = await remembered.get("counts", lambda: run_in_threadpool(s.queries.counts))
    engine = s.workers.recent_engine()
    if engine is None:
        engine = await run_in_threadpool(s.workers.engine)
    return json(
        Dashboard(
            user=DashboardUser(authenticated=True, username=principal.username),
            systems=counts.systems,
            jobs=counts.jobs,
            executions=counts.executions,
            engine=Engine(
                status="healthy" if engine.workers else "unavailable",
                running_jobs=counts.jobs.running,
                available_slots=max(0, engine.capacity - engine.running),
                workers=engine.workers,
            ),
        )
    )


class SystemReport(msgspec.Struct):
    days: int
    rows: list[SystemDay]


async def system_report(request: Request, principal: Principal) -> Response:
    """Per system and day: executions, success rate, mean duration (from the reports model)."""
    days = int_param(request, "days", 30, 1, 3660)
    since = (datetime.now(UTC) - timedelta(days=days - 1)).strftime("%Y-%m-%d")
    rows = await run_in_threadpool(system_days, services(request).store, since)
    return json(SystemReport(days=days, rows=rows))
