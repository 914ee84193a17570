"""/api/systems: register, list and get the machines Orca runs commands on."""

from __future__ import annotations

from uuid import UUID

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.application.systems import (
    Credentials,
    RegisterSystem,
    UpdateSystem,
    delete_system,
    register_system,
    repin_host_key,
    update_system,
)
from orca.application.users import Principal
from orca.executor.probe import test_connection
from orca.executor.ssh import fingerprint
from orca.http.common import (
    bool_param,
    choice_param,
    found,
    json,
    page,
    path_id,
    remembered,
    services,
    settle,
)
from orca.http.errors import FieldError, ValidationFailed
from orca.http.schemas import (
    ConnectionTest,
    HostKey,
    HostKeyPin,
    Message,
    SystemCreate,
    SystemInfo,
    SystemList,
    SystemUpdate,
    decode,
)
from orca.projections.queries import SystemView

_system_create = msgspec.json.Decoder(SystemCreate)
_system_update = msgspec.json.Decoder(SystemUpdate)
_host_key_pin = msgspec.json.Decoder(HostKeyPin)
DEFAULT_PORTS = {"linux": 22, "windows": 5985}
WINRM_HTTPS_PORT = 5986
SYSTEM_TYPES = frozenset(DEFAULT_PORTS)


def _fingerprint(host_key: str) -> str:
    try:
        return fingerprint(host_key)
    except ValueError:
        message = "not an OpenSSH public key (expected e.g. 'ssh-ed25519 AAAA...')"
        raise ValidationFailed(
            f"invalid host_key: {message}", [FieldError(field="host_key", message=message)]
        ) from None


def _command(body: SystemCreate) -> RegisterSystem:
    if body.password is None and body.private_key is None:
        message = "give a password or a private_key"
        raise ValidationFailed(message, [FieldError(field="password", message=message)])
    if body.system_type == "windows":
        if body.private_key is not None or body.password is None:
            message = "windows systems log in with a password"
            raise ValidationFailed(message, [FieldError(field="password", message=message)])
        if body.winrm_transport == "basic" and not body.use_https:
            message = "basic authentication sends the password in clear: use it only with https"
            raise ValidationFailed(message, [FieldError(field="winrm_transport", message=message)])
    if body.host_key is not None:
        _fingerprint(body.host_key)
    default_port = DEFAULT_PORTS[body.system_type]
    if body.system_type == "windows" and body.use_https:
        default_port = WINRM_HTTPS_PORT
    return RegisterSystem(
        name=body.name,
        hostname=body.hostname,
        port=body.port or default_port,
        system_type=body.system_type,
        username=body.username,
        credentials=Credentials(
            password=body.password,
            private_key=body.private_key,
            passphrase=body.private_key_passphrase,
        ),
        description=body.description,
        host_key=body.host_key,
        winrm_transport=body.winrm_transport,
        use_https=body.use_https,
        verify_tls=body.verify_tls,
    )


async def create_system(request: Request, principal: Principal) -> Response:
    command = _command(decode(await request.body(), _system_create))
    s = services(request)
    saved = await run_in_threadpool(register_system, s.app, s.vault, command, by=principal.username)
    await settle(request, saved.position)
    view = await run_in_threadpool(s.queries.get_system, str(saved.id))
    return json(found(view, "system", str(saved.id)), status=201)


async def list_systems(request: Request, principal: Principal) -> Response:
    limit, offset = page(request)
    active = bool_param(request, "active")
    system_type = choice_param(request, "system_type", SYSTEM_TYPES)
    queries = services(request).queries

    def read() -> SystemList:
        systems, total = queries.list_systems(
            active=active, system_type=system_type, limit=limit, offset=offset
        )
        return SystemList(systems=systems, total=total, limit=limit, offset=offset)

    return await remembered(request, ("systems", active, system_type, limit, offset), read)


async def get_system(request: Request, principal: Principal) -> Response:
    system_id = path_id(request, "system_id")
    queries = services(request).queries
    return await remembered(
        request,
        ("system", system_id),
        lambda: queries.get_system(system_id),
        f"system {system_id} not found",
    )


async def update(request: Request, principal: Principal) -> Response:
    system_id = path_id(request, "system_id")
    body = decode(await request.body(), _system_update)
    s = services(request)
    saved = await run_in_threadpool(
        update_system,
        s.app,
        s.vault,
        UUID(system_id),
        UpdateSystem(
            name=body.name,
            hostname=body.hostname,
            port=body.port,
            username=body.username,
            description=body.description,
            is_active=body.is_active,
            password=body.password,
            private_key=body.private_key,
            passphrase=body.private_key_passphrase,
        ),
        by=principal.username,
    )
    await settle(request, saved.position)
    view = await run_in_threadpool(s.queries.get_system, system_id)
    return json(found(view, "system", system_id))


async def delete(request: Request, principal: Principal) -> Response:
    system_id = path_id(request, "system_id")
    s = services(request)
    unfinished = await run_in_threadpool(s.queries.unfinished_executions_of, system_id)
    position = await run_in_threadpool(
        delete_system,
        s.app,
        s.vault,
        UUID(system_id),
        [UUID(e) for e in unfinished],
        by=principal.username,
    )
    await settle(request, position)
    return json(Message(message="System deleted successfully"))


async def test(request: Request, principal: Principal) -> Response:
    system_id = path_id(request, "system_id")
    s = services(request)
    result = await test_connection(s.remote, s.vault, UUID(system_id))
    await settle(request, result.position)
    info = (
        SystemInfo(whoami_output=result.whoami, hostname=result.hostname, os_info=result.os_info)
        if result.success
        else None
    )
    return json(
        ConnectionTest(
            success=result.success,
            response_time_ms=result.response_time_ms,
            system_info=info,
            error=result.error,
        )
    )


def _host_key(view: SystemView) -> HostKey:
    key = view.host_key
    return HostKey(host_key=key, fingerprint=fingerprint(key) if key else None)


async def get_host_key(request: Request, principal: Principal) -> Response:
    system_id = path_id(request, "system_id")
    view = await run_in_threadpool(services(request).queries.get_system, system_id)
    return json(_host_key(found(view, "system", system_id)))


async def pin_host_key(request: Request, principal: Principal) -> Response:
    """Trust a new host key, after the operator checked it out of band."""
    system_id = path_id(request, "system_id")
    body = decode(await request.body(), _host_key_pin)
    _fingerprint(body.host_key)
    s = services(request)
    position = await run_in_threadpool(
        repin_host_key, s.app, UUID(system_id), body.host_key, by=principal.username
    )
    await settle(request, position)
    view = await run_in_threadpool(s.queries.get_system, system_id)
    return json(_host_key(found(view, "system", system_id)))
