"""API tokens (JWT, HS256, algorithm pinned), sessions, and the permissions of each role.

An access token lives 30 minutes; a refresh token lives as long as its session
(``ORCA_SESSION_MAX``) and is replaced on every use. Every request also checks that the
token's session is still good: not logged out, user not disabled, password and role unchanged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

import jwt
import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application.audit import acting
from orca.application.users import Login, Principal
from orca.http.cache import UntilViewsMove
from orca.http.errors import Forbidden, Unauthorized
from orca.projections.beacon import Beacon
from orca.projections.queries import Queries, SessionState

ACCESS_TTL_SECONDS = 1800
_ALGORITHM = "HS256"
_CACHE_LIMIT = 10_000
_EXPIRED = "token expired; log in again with POST /api/auth/token"

AUTHENTICATED = "authenticated"  # any valid session, whatever its role

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"systems:read", "systems:write", "jobs:read", "jobs:write", "users:admin", "audit:read"}
    ),
    "operator": frozenset({"systems:read", "jobs:read", "jobs:write"}),
    "viewer": frozenset({"systems:read", "jobs:read"}),
}


class Claims(msgspec.Struct, frozen=True):
    sub: str
    role: str
    type: Literal["access", "refresh"]
    sid: str
    cv: int
    exp: int
    sexp: int  # when the session ends: no token of it lives longer
    rid: str | None = None


class TokenResponse(msgspec.Struct, omit_defaults=True):
    """An access token, and with a login or refresh, the refresh token that continues it."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str | None = None
    refresh_expires_in: int | None = None


class Tokens:
    def __init__(self, key: bytes, access_ttl: int = ACCESS_TTL_SECONDS) -> None:
        self._key = key
        self.access_ttl = access_ttl
        # Tokens whose signature and claims were checked: only their expiry changes with time.
        self._verified: dict[str, Claims] = {}

    def _encode(self, claims: dict[str, object]) -> str:
        now = int(time.time())
        return jwt.encode(
            {**claims, "iat": now, "jti": uuid.uuid4().hex}, self._key, algorithm=_ALGORITHM
        )

    def access(self, principal: Principal, session_expires: int) -> TokenResponse:
        """An access token that never outlives its session."""
        now = int(time.time())
        exp = min(now + self.access_ttl, session_expires)
        token = self._encode(
            {
                "sub": principal.username,
                "role": principal.role,
                "type": "access",
                "sid": str(principal.session_id),
                "cv": principal.credentials_version,
                "exp": exp,
                "sexp": session_expires,
            }
        )
        return TokenResponse(access_token=token, token_type="bearer", expires_in=exp - now)

    def pair(self, login: Login) -> TokenResponse:
        expires = int(login.expires_at.timestamp())
        access = self.access(login.principal, expires)
        refresh = self._encode(
            {
                "sub": login.principal.username,
                "role": login.principal.role,
                "type": "refresh",
                "sid": str(login.principal.session_id),
                "cv": login.principal.credentials_version,
                "rid": login.refresh_id,
                "exp": expires,
                "sexp": expires,
            }
        )
        return TokenResponse(
            access_token=access.access_token,
            token_type="bearer",
            expires_in=access.expires_in,
            refresh_token=refresh,
            refresh_expires_in=max(0, expires - int(time.time())),
        )

    def verify(self, token: str) -> Claims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[token] = claims
        elif claims.exp <= time.time():
            raise Unauthorized(_EXPIRED)
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            raw = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
            claims = msgspec.convert(raw, Claims)
        except jwt.ExpiredSignatureError:
            raise Unauthorized(_EXPIRED) from None
        except (jwt.InvalidTokenError, msgspec.ValidationError):
            raise Unauthorized("invalid token") from None
        if claims.role not in ROLE_PERMISSIONS:
            raise Unauthorized("invalid token")
        return claims


def principal_of(claims: Claims, role: str | None = None) -> Principal:
    return Principal(
        username=claims.sub,
        role=role or claims.role,
        session_id=uuid.UUID(claims.sid),
        credentials_version=claims.cv,
    )


class Sessions:
    """Answers "is this session still good?" from the read models, remembering the answers
    until users or sessions change there (``accounts`` advances): a busy API that creates
    jobs moves the read models all the time, and would otherwise read each request's
    session again."""

    def __init__(self, queries: Queries, accounts: Beacon) -> None:
        self._queries = queries
        self._known: UntilViewsMove[SessionState] = UntilViewsMove(accounts, _CACHE_LIMIT)

    async def check(self, claims: Claims) -> SessionState:
        return await self._known.get(
            (claims.sid, claims.cv),
            lambda: run_in_threadpool(self._queries.session, claims.sid, claims.cv),
        )


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token; send Authorization: Bearer <token>")
    return token.strip()


async def authenticate(request: Request, *, allow: str = "access") -> tuple[Claims, Principal]:
    tokens: Tokens = request.app.state.tokens
    claims = tokens.verify(bearer_token(request))
    if claims.type != allow:
        raise Unauthorized(f"a {claims.type} token cannot be used here")
    sessions: Sessions = request.app.state.sessions
    state = await sessions.check(claims)
    if not state.valid:
        raise Unauthorized("session ended (logged out, password or role changed, or disabled)")
    return claims, principal_of(claims, state.role)


Endpoint = Callable[[Request, Principal], Awaitable[Response]]


def secured(permission: str, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an endpoint so it runs only for a valid token whose role grants ``permission``."""

    async def guarded(request: Request) -> Response:
        _, principal = await authenticate(request)
        if permission != AUTHENTICATED and permission not in ROLE_PERMISSIONS[principal.role]:
            raise Forbidden(f"role {principal.role!r} lacks the {permission!r} permission")
        with acting(principal.username, getattr(request.state, "request_id", None)):
            return await endpoint(request, principal)

    guarded.__name__ = endpoint.__name__
    return guarded
