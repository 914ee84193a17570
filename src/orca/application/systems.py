"""Registering, changing and removing the systems Orca runs commands on."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any
from uuid import UUID, uuid4

from orca.application.app import OrcaApplication
from orca.application.sealing import Vault
from orca.domain.errors import NotFound
from orca.domain.index import NameIndex, index_id
from orca.domain.job import Execution
from orca.domain.system import System

SYSTEM_NAME = "system"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What Orca needs to log in. Only ever stored sealed."""

    password: str | None = None
    private_key: str | None = None
    passphrase: str | None = None


@dataclass(frozen=True, slots=True)
class RegisterSystem:
    name: str
    hostname: str
    port: int
    system_type: str
    username: str
    credentials: Credentials
    description: str = ""
    host_key: str | None = None
    winrm_transport: str = "ntlm"
    use_https: bool = False
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class UpdateSystem:
    """None leaves a field as it is. Given credential parts replace the stored ones."""

    name: str | None = None
    hostname: str | None = None
    port: int | None = None
    username: str | None = None
    description: str | None = None
    is_active: bool | None = None
    password: str | None = None
    private_key: str | None = None
    passphrase: str | None = None


@dataclass(frozen=True, slots=True)
class Saved:
    id: UUID
    position: int


def seal_credentials(vault: Vault, system_id: UUID, credentials: Credentials) -> str:
    return vault.seal(system_id, json.dumps(asdict(credentials)).encode())


def open_credentials(vault: Vault, systems: Iterable[System]) -> dict[UUID, Credentials]:
    """The credentials of these systems, with one read of their data keys."""
    opened = vault.open({s.id: s.sealed_credentials for s in systems})
    return {system_id: Credentials(**json.loads(raw)) for system_id, raw in opened.items()}


def _claim_name(app: OrcaApplication, name: str, system_id: UUID) -> NameIndex:
    index = app.find(index_id(SYSTEM_NAME, name))
    if isinstance(index, NameIndex):
        index.reclaim(system_id)
        return index
    return NameIndex(kind=SYSTEM_NAME, name=name, owner_id=system_id)


def _release_name(app: OrcaApplication, name: str) -> NameIndex:
    index = app.get(NameIndex, index_id(SYSTEM_NAME, name), "name index")
    index.release()
    return index


def register_system(app: OrcaApplication, vault: Vault, cmd: RegisterSystem, *, by: str) -> Saved:
    system_id = uuid4()
    index = _claim_name(app, cmd.name, system_id)
    system = System(  # type: ignore[call-arg]  # ``id`` is declared on the class
        id=system_id,
        name=cmd.name,
        hostname=cmd.hostname,
        port=cmd.port,
        system_type=cmd.system_type,
        username=cmd.username,
        sealed_credentials=seal_credentials(vault, system_id, cmd.credentials),
        description=cmd.description,
        host_key=cmd.host_key,
        registered_by=by,
        winrm_transport=cmd.winrm_transport,
        use_https=cmd.use_https,
        verify_tls=cmd.verify_tls,
    )
    taken = f"a system named {cmd.name!r} already exists"
    return Saved(system_id, app.commit([index, system], conflict=taken))


def update_system(
    app: OrcaApplication, vault: Vault, system_id: UUID, cmd: UpdateSystem, *, by: str
) -> Saved:
    system = app.get(System, system_id, "system")
    if system.is_deleted:
        raise NotFound(f"system {system_id} not found (it was deleted)")
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "name": cmd.name,
            "hostname": cmd.hostname,
            "port": cmd.port,
            "username": cmd.username,
            "description": cmd.description,
            "is_active": cmd.is_active,
        }.items()
        if v is not None
    }
    given = {
        k: v
        for k, v in {
            "password": cmd.password,
            "private_key": cmd.private_key,
            "passphrase": cmd.passphrase,
        }.items()
        if v is not None
    }
    if given:
        credentials = replace(open_credentials(vault, [system])[system.id], **given)
        changes["sealed_credentials"] = seal_credentials(vault, system.id, credentials)
    indexes: list[NameIndex] = []
    if cmd.name is not None and index_id(SYSTEM_NAME, cmd.name) != index_id(
        SYSTEM_NAME, system.name
    ):
        indexes = [_release_name(app, system.name), _claim_name(app, cmd.name, system.id)]
    system.update(changes, by=by)
    if not system.pending_events:
        return Saved(system.id, 0)
    taken = f"a system named {cmd.name!r} already exists"
    return Saved(system.id, app.commit([*indexes, system], conflict=taken))


def delete_system(
    app: OrcaApplication, vault: Vault, system_id: UUID, unfinished: list[UUID], *, by: str
) -> int:
    """Delete a system; its pending executions are cancelled and running ones killed.

    ``unfinished`` names the system's executions that may still be pending or running; each
    aggregate decides for itself.
    """
    system = app.get(System, system_id, "system")
    system.delete(by=by)
    executions = [app.get(Execution, e, "execution") for e in unfinished]
    for execution in executions:
        execution.cancel(reason=f"system {system.name} was deleted")
    position = app.commit(
        [_release_name(app, system.name), system, *executions],
        conflict="the system or one of its executions changed concurrently; try again",
    )
    vault.shred(system.id)  # every sealed copy of its credentials in the log is now noise
    return position


def record_health(
    app: OrcaApplication,
    system_id: UUID,
    *,
    healthy: bool,
    response_time_ms: float | None,
    error: str | None,
) -> int:
    system = app.get(System, system_id, "system")
    system.record_health(healthy, response_time_ms, error)
    return app.commit([system], conflict="system changed concurrently")


def repin_host_key(app: OrcaApplication, system_id: UUID, host_key: str, *, by: str) -> int:
    system = app.get(System, system_id, "system")
    system.repin_host_key(host_key, by=by)
    if not system.pending_events:
        return 0
    return app.commit([system], conflict="system changed concurrently")
