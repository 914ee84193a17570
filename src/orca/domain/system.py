"""A registered machine that Orca runs commands on."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate

from orca.domain.errors import NotFound

SystemType = Literal["linux", "windows"]
HealthStatus = Literal["healthy", "unhealthy", "unknown"]

# What an update may change; credentials are replaced whole, sealed, never shown.
UPDATABLE = frozenset(
    {"name", "hostname", "port", "username", "sealed_credentials", "description", "is_active"}
)


class System(Aggregate):
    """A Linux (SSH) or Windows (WinRM) machine and how to reach it.

    Credentials are held only as ``sealed_credentials``: ciphertext made by the application
    before the event exists, so no event, read model or log ever holds them in plain text.
    """

    TOPIC = "orca.System"
    id: UUID  # given by the caller: credentials are sealed to the id before the event exists

    class Created(Aggregate.Created):
        TOPIC = "orca.System.Created"
        name: str
        hostname: str
        port: int
        system_type: str
        username: str
        sealed_credentials: str
        description: str
        host_key: str | None
        registered_by: str
        winrm_transport: str = "ntlm"
        use_https: bool = False
        verify_tls: bool = True

    class Updated(Aggregate.Event):
        """Only the fields that changed; ``sealed_credentials`` when they were replaced."""

        TOPIC = "orca.System.Updated"
        changes: dict[str, Any]
        updated_by: str

        def apply(self, aggregate: System) -> None:
            for field, value in self.changes.items():
                setattr(aggregate, field, value)

    class HostKeyPinned(Aggregate.Event):
        """The server's public key is trusted (first use, given, or re-pinned by an admin)."""

        TOPIC = "orca.System.HostKeyPinned"
        host_key: str
        pinned_by: str = "trust-on-first-use"

        def apply(self, aggregate: System) -> None:
            aggregate.host_key = self.host_key

    class HealthChecked(Aggregate.Event):
        TOPIC = "orca.System.HealthChecked"
        health_status: str
        response_time_ms: float | None
        error: str | None

        def apply(self, aggregate: System) -> None:
            aggregate.health_status = self.health_status
            aggregate.last_health_check = self.timestamp

    class Deleted(Aggregate.Event):
        TOPIC = "orca.System.Deleted"
        deleted_by: str

        def apply(self, aggregate: System) -> None:
            aggregate.is_deleted = True
            aggregate.is_active = False
            aggregate.sealed_credentials = ""

    def __init__(
        self,
        name: str,
        hostname: str,
        port: int,
        system_type: str,
        username: str,
        sealed_credentials: str,
        description: str,
        host_key: str | None,
        registered_by: str,
        winrm_transport: str = "ntlm",
        use_https: bool = False,
        verify_tls: bool = True,
    ) -> None:
        self.name = name
        self.hostname = hostname
        self.port = port
        self.system_type = system_type
        self.username = username
        self.sealed_credentials = sealed_credentials
        self.description = description
        self.host_key = host_key
        self.registered_by = registered_by
        self.winrm_transport = winrm_transport
        self.use_https = use_https
        self.verify_tls = verify_tls
        self.is_active = True
        self.is_deleted = False
        self.health_status: str = "unknown"
        self.last_health_check: datetime | None = None

    def _check_exists(self) -> None:
        if self.is_deleted:
            raise NotFound(f"system {self.id} not found (it was deleted)")

    def update(self, changes: dict[str, Any], *, by: str) -> None:
        self._check_exists()
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        changed = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if changed:
            self.trigger_event(self.Updated, changes=changed, updated_by=by)

    def pin_host_key(self, host_key: str) -> None:
        """Trust on first use: the first key seen is kept; a later one is never silently taken."""
        if self.host_key is None and not self.is_deleted:
            self.trigger_event(self.HostKeyPinned, host_key=host_key)

    def repin_host_key(self, host_key: str, *, by: str) -> None:
        """An admin trusts a new key, after checking it out of band."""
        self._check_exists()
        if host_key != self.host_key:
            self.trigger_event(self.HostKeyPinned, host_key=host_key, pinned_by=by)

    def record_health(
        self, healthy: bool, response_time_ms: float | None, error: str | None
    ) -> None:
        if not self.is_deleted:
            self.trigger_event(
                self.HealthChecked,
                health_status="healthy" if healthy else "unhealthy",
                response_time_ms=response_time_ms,
                error=error,
            )

    def delete(self, *, by: str) -> None:
        self._check_exists()
        self.trigger_event(self.Deleted, deleted_by=by)
