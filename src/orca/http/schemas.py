"""Request and response bodies: msgspec Structs, one decoder per request type."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeVar
from uuid import UUID

import msgspec
from msgspec import Meta

from orca.http.errors import BadRequest, PayloadTooLarge, validation_error
from orca.projections.queries import (
    ExecutionCounts,
    JobCounts,
    JobView,
    SystemCounts,
    SystemView,
    UserView,
)

MAX_BODY_BYTES = 1024 * 1024

# Text without NUL bytes (they break C strings on remote hosts and PostgreSQL text).
_NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Hostname = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=253,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$",
        description="DNS name, IPv4 or IPv6 address",
    ),
]
Port = Annotated[int, Meta(ge=1, le=65535)]
Username = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Secret = Annotated[str, Meta(min_length=1, max_length=16_384, pattern=_NO_NUL)]
Description = Annotated[str, Meta(max_length=4096, pattern=_NO_NUL)]
Command = Annotated[str, Meta(min_length=1, max_length=131_072, pattern=_NO_NUL)]
PublicKey = Annotated[str, Meta(min_length=16, max_length=16_384, pattern=r"^[^\x00-\x1f]+$")]
SystemType = Literal["linux", "windows"]
TimeoutSeconds = Annotated[int, Meta(ge=1, le=86_400)]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=255)]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=4096)]


class Me(msgspec.Struct):
    username: str
    roles: list[str]
    permissions: list[str]


class Message(msgspec.Struct):
    message: str


Role = Literal["admin", "operator", "viewer"]
UserName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]
Password = Annotated[str, Meta(min_length=8, max_length=1024, pattern=_NO_NUL)]


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: UserName
    password: Password
    role: Role = "viewer"


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | None = None
    is_active: bool | None = None
    password: Password | None = None


class UserList(msgspec.Struct):
    users: list[UserView]
    total: int


class SystemCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    hostname: Hostname
    port: Port | None = None
    system_type: SystemType = "linux"
    username: Username
    password: Secret | None = None
    private_key: Secret | None = None
    private_key_passphrase: Secret | None = None
    description: Description = ""
    host_key: PublicKey | None = None
    winrm_transport: Literal["ntlm", "basic"] = "ntlm"
    use_https: bool = False
    verify_tls: bool = True


class SystemUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every field is optional; credentials are write-only."""

    name: Name | None = None
    hostname: Hostname | None = None
    port: Port | None = None
    username: Username | None = None
    password: Secret | None = None
    private_key: Secret | None = None
    private_key_passphrase: Secret | None = None
    description: Description | None = None
    is_active: bool | None = None


class HostKeyPin(msgspec.Struct, forbid_unknown_fields=True):
    host_key: PublicKey


class HostKey(msgspec.Struct):
    host_key: str | None
    fingerprint: str | None


class SystemInfo(msgspec.Struct):
    whoami_output: str
    hostname: str
    os_info: str


class ConnectionTest(msgspec.Struct):
    success: bool
    response_time_ms: float | None
    system_info: SystemInfo | None = None
    error: str | None = None


class SystemList(msgspec.Struct):
    systems: list[SystemView]
    total: int
    limit: int
    offset: int


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    command: Command
    system_ids: Annotated[list[UUID], Meta(min_length=1, max_length=1000)]
    schedule_at: datetime | None = None
    timeout_seconds: TimeoutSeconds = 3600


IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]


class JobList(msgspec.Struct):
    jobs: list[JobView]
    total: int
    limit: int
    offset: int


class Health(msgspec.Struct):
    status: str
    service: str
    version: str


class DatabaseHealth(msgspec.Struct):
    status: str
    response_time_ms: float | None
    active_connections: int | None
    backend: str
    error: str | None = None


class Components(msgspec.Struct):
    database: str
    execution_engine: str
    projections: str


class Projections(msgspec.Struct):
    lag_events: int
    failed_events: int


class HealthDetailed(msgspec.Struct):
    status: str
    service: str
    version: str
    database: DatabaseHealth
    components: Components
    projections: Projections | None


class DashboardUser(msgspec.Struct):
    authenticated: bool
    username: str


class Engine(msgspec.Struct):
    status: str
    running_jobs: int
    available_slots: int
    workers: int


class Dashboard(msgspec.Struct):
    user: DashboardUser
    systems: SystemCounts
    jobs: JobCounts
    executions: ExecutionCounts
    engine: Engine


T = TypeVar("T")


def decode(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise validation_error(error) from None
    except msgspec.DecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    except UnicodeDecodeError:
        raise BadRequest("malformed JSON: the body is not valid UTF-8") from None
