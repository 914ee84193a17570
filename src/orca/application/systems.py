"""Registering the systems Orca runs commands on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from uuid import UUID, uuid4

from orca.application.app import OrcaApplication
from orca.application.sealing import Sealer
from orca.domain.errors import Conflict
from orca.domain.index import NameIndex, index_id
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


@dataclass(frozen=True, slots=True)
class Saved:
    id: UUID
    position: int


def seal_credentials(sealer: Sealer, system_id: UUID, credentials: Credentials) -> str:
    return sealer.seal(json.dumps(asdict(credentials)).encode(), system_id.bytes)


def open_credentials(sealer: Sealer, system: System) -> Credentials:
    return Credentials(**json.loads(sealer.open(system.sealed_credentials, system.id.bytes)))


def register_system(app: OrcaApplication, sealer: Sealer, cmd: RegisterSystem, *, by: str) -> Saved:
    system_id = uuid4()
    taken = f"a system named {cmd.name!r} already exists"
    index = app.find(index_id(SYSTEM_NAME, cmd.name))
    if isinstance(index, NameIndex):
        index.reclaim(system_id)
    elif index is None:
        index = NameIndex(kind=SYSTEM_NAME, name=cmd.name, owner_id=system_id)
    else:  # pragma: no cover - an id collision with another aggregate type
        raise Conflict(taken)
    system = System(  # type: ignore[call-arg]  # ``id`` is declared on the class
        id=system_id,
        name=cmd.name,
        hostname=cmd.hostname,
        port=cmd.port,
        system_type=cmd.system_type,
        username=cmd.username,
        sealed_credentials=seal_credentials(sealer, system_id, cmd.credentials),
        description=cmd.description,
        host_key=cmd.host_key,
        registered_by=by,
    )
    return Saved(system_id, app.commit([index, system], conflict=taken))
