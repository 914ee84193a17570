"""POST /api/auth/token."""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application.users import authenticate
from orca.http.auth import Tokens
from orca.http.common import json, services
from orca.http.errors import Unauthorized
from orca.http.schemas import TokenRequest, TokenResponse, decode

_token_request = msgspec.json.Decoder(TokenRequest)


async def issue_token(request: Request) -> Response:
    body = decode(await request.body(), _token_request)
    principal = await run_in_threadpool(
        authenticate, services(request).app, body.username, body.password
    )
    if principal is None:
        raise Unauthorized("incorrect username or password")
    tokens: Tokens = request.app.state.tokens
    return json(
        TokenResponse(
            access_token=tokens.issue_access(principal),
            token_type="bearer",
            expires_in=tokens.access_ttl,
        )
    )
