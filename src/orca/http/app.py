"""create_app: the API as data. One table of endpoints feeds the router and /openapi.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orca.application.audit import History
from orca.bootstrap import Services
from orca.http import audit, jobs, overview, systems, tokens, users
from orca.http.audit import AuditPage
from orca.http.auth import (
    AUTHENTICATED,
    Sessions,
    TokenResponse,
    Tokens,
    secured,
)
from orca.http.cache import UntilViewsMove
from orca.http.errors import EXCEPTION_HANDLERS
from orca.http.metrics import Metrics, OrcaState, metrics
from orca.http.middleware import RequestId
from orca.http.openapi import openapi_document
from orca.http.ratelimit import RateLimit
from orca.http.schemas import (
    ConnectionTest,
    Dashboard,
    Health,
    HealthDetailed,
    HostKey,
    HostKeyPin,
    JobCreate,
    JobList,
    Me,
    Message,
    RefreshRequest,
    SystemCreate,
    SystemList,
    SystemUpdate,
    TokenRequest,
    UserCreate,
    UserList,
    UserUpdate,
)
from orca.projections.queries import JobView, SystemView, UserView


@dataclass(frozen=True)
class Query:
    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Api:
    """One endpoint: where, who may call it, what it takes and gives."""

    method: str
    path: str
    handler: Any
    permission: str | None
    summary: str
    body: type | None = None
    response: Any = None
    status: int = 200
    query: tuple[Query, ...] = ()
    headers: tuple[Query, ...] = ()


PAGE = (
    Query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "page size"),
    Query("offset", {"type": "integer", "minimum": 0, "default": 0}, "rows to skip"),
)

AT = Query(
    "at",
    {"type": "string", "maxLength": 64},
    "a version number, or an ISO 8601 time with offset: the state as it was then",
)

ENDPOINTS: tuple[Api, ...] = (
    Api("GET", "/health", overview.health, None, "Basic health check", response=Health),
    Api(
        "GET",
        "/health/detailed",
        overview.health_detailed,
        None,
        "Health of the database and the execution engine (503 when unhealthy)",
        response=HealthDetailed,
    ),
    Api(
        "POST",
        "/api/auth/token",
        tokens.issue_token,
        None,
        "Log in (JSON, or an OAuth2 password form) and get an access and a refresh token",
        body=TokenRequest,
        response=TokenResponse,
    ),
    Api(
        "POST",
        "/api/auth/refresh",
        tokens.refresh,
        None,
        "Swap a refresh token for a new pair, or a valid access token for a new one",
        body=RefreshRequest,
        response=TokenResponse,
    ),
    Api("GET", "/api/auth/me", tokens.me, AUTHENTICATED, "The current user", response=Me),
    Api(
        "POST",
        "/api/auth/logout",
        tokens.logout,
        AUTHENTICATED,
        "End this session",
        response=Message,
    ),
    Api("GET", "/api/users", users.list_users, "users:admin", "List users", response=UserList),
    Api(
        "POST",
        "/api/users",
        users.create_user,
        "users:admin",
        "Add a user",
        body=UserCreate,
        response=UserView,
        status=201,
    ),
    Api(
        "PUT",
        "/api/users/{username}",
        users.update_user,
        "users:admin",
        "Change a user's role, password or active flag (ends their sessions)",
        body=UserUpdate,
        response=UserView,
    ),
    Api(
        "GET",
        "/api/systems",
        systems.list_systems,
        "systems:read",
        "List systems",
        response=SystemList,
        query=(
            Query("active", {"type": "boolean"}, "only active (true) or inactive (false)"),
            Query("system_type", {"enum": ["linux", "windows"]}, "only this type"),
            *PAGE,
        ),
    ),
    Api(
        "POST",
        "/api/systems",
        systems.create_system,
        "systems:write",
        "Register a system",
        body=SystemCreate,
        response=SystemView,
        status=201,
    ),
    Api(
        "GET",
        "/api/systems/{system_id}",
        systems.get_system,
        "systems:read",
        "Get a system",
        response=SystemView,
    ),
    Api(
        "PUT",
        "/api/systems/{system_id}",
        systems.update,
        "systems:write",
        "Change a system (any subset of fields; credentials are write-only)",
        body=SystemUpdate,
        response=SystemView,
    ),
    Api(
        "DELETE",
        "/api/systems/{system_id}",
        systems.delete,
        "systems:write",
        "Delete a system and its executions (history stays in the event log)",
        response=Message,
    ),
    Api(
        "POST",
        "/api/systems/{system_id}/test",
        systems.test,
        "systems:write",
        "Test the connection: whoami, hostname, OS; records the health",
        response=ConnectionTest,
    ),
    Api(
        "GET",
        "/api/systems/{system_id}/history",
        audit.system_history,
        "systems:read",
        "A system's events, and its state as it was at a version or time",
        response=History,
        query=(AT,),
    ),
    Api(
        "GET",
        "/api/systems/{system_id}/host-key",
        systems.get_host_key,
        "systems:read",
        "The SSH host key Orca trusts for this system, and its fingerprint",
        response=HostKey,
    ),
    Api(
        "POST",
        "/api/systems/{system_id}/host-key",
        systems.pin_host_key,
        "systems:write",
        "Trust a new SSH host key (after a legitimate key change)",
        body=HostKeyPin,
        response=HostKey,
    ),
    Api(
        "GET",
        "/api/jobs",
        jobs.list_jobs,
        "jobs:read",
        "List jobs, newest first",
        response=JobList,
        query=(
            Query(
                "status",
                {"enum": ["pending", "running", "completed", "failed", "cancelled"]},
                "only jobs in this status",
            ),
            Query("created_by", {"type": "string", "maxLength": 255}, "only this user's jobs"),
            *PAGE,
        ),
    ),
    Api(
        "POST",
        "/api/jobs",
        jobs.create,
        "jobs:write",
        "Create a job: run a command on systems, now or at schedule_at",
        body=JobCreate,
        response=JobView,
        status=201,
        headers=(
            Query(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255},
                "a retry with the same key returns the same job and runs nothing twice",
            ),
        ),
    ),
    Api("GET", "/api/jobs/{job_id}", jobs.get_job, "jobs:read", "Get a job", response=JobView),
    Api(
        "GET",
        "/api/jobs/{job_id}/history",
        audit.job_history,
        "jobs:read",
        "A job's events, and its state as it was at a version or time",
        response=History,
        query=(AT,),
    ),
    Api(
        "POST",
        "/api/jobs/{job_id}/cancel",
        jobs.cancel,
        "jobs:write",
        "Cancel a pending or running job (409 if it has finished)",
        response=Message,
    ),
    Api(
        "GET",
        "/api/reports/systems",
        overview.system_report,
        "systems:read",
        "Per system and day: executions, success rate and mean duration, built from the log",
        response=overview.SystemReport,
        query=(Query("days", {"type": "integer", "minimum": 1, "maximum": 3660}, "days back"),),
    ),
    Api(
        "GET",
        "/api/events",
        audit.list_events,
        "audit:read",
        "The event log in order: who did what, when (secrets never shown)",
        response=AuditPage,
        query=(
            Query("after", {"type": "integer", "minimum": 0, "default": 0}, "log position"),
            Query(
                "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page"
            ),
            Query("aggregate_id", {"type": "string", "maxLength": 64}, "one aggregate only"),
            Query(
                "type",
                {"type": "string", "maxLength": 128},
                "one event type, e.g. orca.Job.Created",
            ),
        ),
    ),
    Api(
        "GET",
        "/api/dashboard",
        overview.dashboard,
        AUTHENTICATED,
        "Counts of systems, jobs and executions, and the engine's capacity",
        response=Dashboard,
    ),
)


ANSWERS_BYTES = 64 * 1024 * 1024  # read answers kept in memory until the views move


def _weight(body: bytes | None) -> int:
    return len(body) if body is not None else 64


def _route(api: Api) -> Route:
    handler = api.handler
    if api.permission is not None:
        handler = secured(api.permission, handler)
    return Route(api.path, handler, methods=[api.method], name=f"{api.method} {api.path}")


async def _openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


def create_app(services: Services) -> Starlette:
    s = services.settings
    registry = CollectorRegistry()
    registry.register(OrcaState(services))
    app = Starlette(
        routes=[
            *(_route(api) for api in ENDPOINTS),
            Route("/openapi.json", _openapi),
            Route("/metrics", metrics),
        ],
        middleware=[
            Middleware(Metrics, registry=registry),
            Middleware(RequestId),
            Middleware(
                RateLimit,
                limit=s.rate_limit,
                login_limit=s.login_rate_limit,
                storage=s.rate_limit_storage,
                trusted_proxies=s.trusted_proxies,
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.services = services
    app.state.tokens = Tokens(services.token_key)
    app.state.sessions = Sessions(services.queries, services.accounts)
    app.state.answers = UntilViewsMove(services.views, ANSWERS_BYTES, _weight)
    app.state.counts = UntilViewsMove(services.views, 1)
    app.state.openapi = openapi_document(ENDPOINTS)
    app.state.metrics = registry
    return app
