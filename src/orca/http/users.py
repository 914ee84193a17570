"""/api/users: administration of who may use Orca (admin only)."""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application import users
from orca.application.users import Principal
from orca.http.common import found, json, services, settle
from orca.http.schemas import UserCreate, UserList, UserUpdate, decode

_user_create = msgspec.json.Decoder(UserCreate)
_user_update = msgspec.json.Decoder(UserUpdate)


def _user_view(request: Request, username: str) -> object:
    wanted = username.casefold()
    return next(
        (u for u in services(request).queries.list_users() if u.username.casefold() == wanted),
        None,
    )


async def list_users(request: Request, principal: Principal) -> Response:
    listed = await run_in_threadpool(services(request).queries.list_users)
    return json(UserList(users=listed, total=len(listed)))


async def create_user(request: Request, principal: Principal) -> Response:
    body = decode(await request.body(), _user_create)
    position = await run_in_threadpool(
        users.add_user, services(request).app, body.username, body.password, body.role
    )
    await settle(request, position)
    view = await run_in_threadpool(_user_view, request, body.username)
    return json(found(view, "user", body.username), status=201)


async def update_user(request: Request, principal: Principal) -> Response:
    username = request.path_params["username"]
    body = decode(await request.body(), _user_update)
    app = services(request).app
    position = 0
    if body.role is not None:
        position = await run_in_threadpool(
            users.set_role, app, username, body.role, by=principal.username
        )
    if body.is_active is not None:
        position = await run_in_threadpool(
            users.set_active, app, username, body.is_active, by=principal.username
        )
    if body.password is not None:
        position = await run_in_threadpool(
            users.change_password, app, username, body.password, by=principal.username
        )
    if position:
        await settle(request, position)
    view = await run_in_threadpool(_user_view, request, username)
    return json(found(view, "user", username))
