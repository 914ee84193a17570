"""A registered machine that Orca runs commands on."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from eventsourcing.domain import Aggregate

SystemType = Literal["linux", "windows"]
HealthStatus = Literal["healthy", "unhealthy", "unknown"]


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

    class HostKeyPinned(Aggregate.Event):
        """The server's public key was trusted (first use) and is now required."""

        TOPIC = "orca.System.HostKeyPinned"
        host_key: str

        def apply(self, aggregate: System) -> None:
            aggregate.host_key = self.host_key

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
        self.is_active = True

    def pin_host_key(self, host_key: str) -> None:
        """Trust on first use: the first key seen is kept; a later one is never silently taken."""
        if self.host_key is None:
            self.trigger_event(self.HostKeyPinned, host_key=host_key)
