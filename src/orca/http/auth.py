"""API tokens (JWT, HS256, algorithm pinned) and the permissions of each role."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response

from orca.application.users import Principal
from orca.http.errors import Forbidden, Unauthorized

ACCESS_TTL_SECONDS = 1800
_ALGORITHM = "HS256"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"systems:read", "systems:write", "jobs:read", "jobs:write", "users:admin", "audit:read"}
    ),
    "operator": frozenset({"systems:read", "jobs:read", "jobs:write"}),
    "viewer": frozenset({"systems:read", "jobs:read"}),
}


class Tokens:
    def __init__(self, key: bytes, access_ttl: int = ACCESS_TTL_SECONDS) -> None:
        self._key = key
        self.access_ttl = access_ttl

    def issue_access(self, principal: Principal) -> str:
        now = int(time.time())
        claims = {
            "sub": principal.username,
            "role": principal.role,
            "type": "access",
            "iat": now,
            "exp": now + self.access_ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify_access(self, token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired; get a new one from POST /api/auth/token") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid token") from None
        role = claims.get("role")
        if claims.get("type") != "access" or role not in ROLE_PERMISSIONS:
            raise Unauthorized("invalid token")
        return Principal(username=str(claims["sub"]), role=str(role))


Endpoint = Callable[[Request, Principal], Awaitable[Response]]


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token; send Authorization: Bearer <token>")
    return token.strip()


def secured(permission: str, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an endpoint so it runs only for a valid token whose role grants ``permission``."""

    async def guarded(request: Request) -> Response:
        tokens: Tokens = request.app.state.tokens
        principal = tokens.verify_access(bearer_token(request))
        if permission not in ROLE_PERMISSIONS[principal.role]:
            raise Forbidden(f"role {principal.role!r} lacks the {permission!r} permission")
        return await endpoint(request, principal)

    guarded.__name__ = endpoint.__name__
    guarded.permission = permission  # type: ignore[attr-defined]
    return guarded
