"""create_app: the API as data (routes, middleware, exception handlers)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orca import __version__
from orca.bootstrap import Services
from orca.http import jobs, systems, tokens
from orca.http.auth import Tokens, secured
from orca.http.common import json
from orca.http.errors import EXCEPTION_HANDLERS
from orca.http.middleware import RequestId
from orca.http.schemas import Health

SERVICE_NAME = "orca-job-orchestrator"


async def health(request: Request) -> Response:
    return json(Health(status="healthy", service=SERVICE_NAME, version=__version__))


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/api/auth/token", tokens.issue_token, methods=["POST"]),
    Route("/api/systems", secured("systems:write", systems.create_system), methods=["POST"]),
    Route("/api/systems", secured("systems:read", systems.list_systems), methods=["GET"]),
    Route("/api/systems/{system_id}", secured("systems:read", systems.get_system), methods=["GET"]),
    Route("/api/jobs", secured("jobs:write", jobs.create), methods=["POST"]),
    Route("/api/jobs", secured("jobs:read", jobs.list_jobs), methods=["GET"]),
    Route("/api/jobs/{job_id}", secured("jobs:read", jobs.get_job), methods=["GET"]),
]


def create_app(services: Services) -> Starlette:
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(RequestId)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.services = services
    app.state.tokens = Tokens(services.token_key)
    return app
