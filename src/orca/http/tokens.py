"""/api/auth: log in, refresh, who am I, log out."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application import users
from orca.application.audit import acting
from orca.application.users import Principal
from orca.http.auth import ROLE_PERMISSIONS, Tokens, authenticate, principal_of
from orca.http.common import json, services, settle
from orca.http.errors import Unauthorized, validation_error
from orca.http.schemas import MAX_BODY_BYTES, Me, Message, RefreshRequest, TokenRequest, decode

_token_request = msgspec.json.Decoder(TokenRequest)
_refresh_request = msgspec.json.Decoder(RefreshRequest)


async def _credentials(request: Request) -> TokenRequest:
    """JSON, or an OAuth2 password-grant form (application/x-www-form-urlencoded)."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        fields = {
            k: v[0] for k, v in parse_qs(body[:MAX_BODY_BYTES].decode("utf-8", "replace")).items()
        }
        try:
            return msgspec.convert(
                {k: fields[k] for k in ("username", "password") if k in fields}, TokenRequest
            )
        except msgspec.ValidationError as error:
            raise validation_error(error) from None
    return decode(body, _token_request)


async def issue_token(request: Request) -> Response:
    body = await _credentials(request)
    s = services(request)
    with acting(body.username, getattr(request.state, "request_id", None)):
        login = await run_in_threadpool(
            users.login,
            s.app,
            body.username,
            body.password,
            timedelta(seconds=s.settings.session_max_seconds),
        )
    if login is None:
        raise Unauthorized("incorrect username or password")
    await settle(request, login.position)
    tokens: Tokens = request.app.state.tokens
    return json(tokens.pair(login))


async def refresh(request: Request) -> Response:
    """A refresh token (body or bearer) is swapped for a new pair; a still-valid access token
    gets a new access token of the same session. Neither outlives the session."""
    tokens: Tokens = request.app.state.tokens
    body = await request.body()
    if body.strip():
        token = decode(body, _refresh_request).refresh_token
        claims = tokens.verify(token)
    else:
        claims = tokens.verify(_bearer(request))
    if claims.type == "access":
        _, principal = await authenticate(request)
        return json(tokens.access(principal, claims.sexp))
    s = services(request)
    with acting(claims.sub, getattr(request.state, "request_id", None)):
        login = await run_in_threadpool(
            users.refresh, s.app, principal_of(claims).session_id, claims.rid or ""
        )
    if isinstance(login, int):
        if login:
            await settle(request, login)  # the family's revocation shows before we answer
        raise Unauthorized("refresh token is spent, revoked or expired; log in again")
    await settle(request, login.position)
    return json(tokens.pair(login))


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized('send the refresh token as {"refresh_token": ...} or as a bearer token')
    return token.strip()


async def me(request: Request, principal: Principal) -> Response:
    return json(
        Me(
            username=principal.username,
            roles=[principal.role],
            permissions=sorted(ROLE_PERMISSIONS[principal.role]),
        )
    )


async def logout(request: Request, principal: Principal) -> Response:
    s = services(request)
    position = await run_in_threadpool(users.logout, s.app, principal.session_id)
    if position:
        await settle(request, position)
    return json(Message(message="Logged out"))
