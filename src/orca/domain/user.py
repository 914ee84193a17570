"""People and programs allowed to use Orca's API, and their login sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from eventsourcing.domain import Aggregate

from orca.domain.errors import Conflict, Invalid

Role = Literal["admin", "operator", "viewer"]
ROLES: tuple[str, ...] = ("admin", "operator", "viewer")


class User(Aggregate):
    """Credentials are an argon2id hash made by the application; never the password.

    ``credentials_version`` moves on whenever sign-in rights change (password, role,
    disabling), so every session opened before then stops working.
    """

    TOPIC = "orca.User"

    class Created(Aggregate.Created):
        TOPIC = "orca.User.Created"
        username: str
        password_hash: str
        role: str

    class PasswordChanged(Aggregate.Event):
        TOPIC = "orca.User.PasswordChanged"
        password_hash: str
        changed_by: str

        def apply(self, aggregate: User) -> None:
            aggregate.password_hash = self.password_hash
            aggregate.credentials_version += 1

    class RoleChanged(Aggregate.Event):
        TOPIC = "orca.User.RoleChanged"
        role: str
        changed_by: str

        def apply(self, aggregate: User) -> None:
            aggregate.role = self.role
            aggregate.credentials_version += 1

    class Disabled(Aggregate.Event):
        TOPIC = "orca.User.Disabled"
        disabled_by: str

        def apply(self, aggregate: User) -> None:
            aggregate.is_active = False
            aggregate.credentials_version += 1

    class Enabled(Aggregate.Event):
        TOPIC = "orca.User.Enabled"
        enabled_by: str

        def apply(self, aggregate: User) -> None:
            aggregate.is_active = True

    def __init__(self, username: str, password_hash: str, role: str) -> None:
        if role not in ROLES:
            raise Invalid("role", f"must be one of {', '.join(ROLES)}")
        self.username = username
        self.password_hash = password_hash
        self.role = role
        self.is_active = True
        self.credentials_version = 0

    def change_password(self, password_hash: str, *, by: str) -> None:
        self.trigger_event(self.PasswordChanged, password_hash=password_hash, changed_by=by)

    def change_role(self, role: str, *, by: str) -> None:
        if role not in ROLES:
            raise Invalid("role", f"must be one of {', '.join(ROLES)}")
        if role != self.role:
            self.trigger_event(self.RoleChanged, role=role, changed_by=by)

    def disable(self, *, by: str) -> None:
        if self.is_active:
            self.trigger_event(self.Disabled, disabled_by=by)

    def enable(self, *, by: str) -> None:
        if not self.is_active:
            self.trigger_event(self.Enabled, enabled_by=by)


class Session(Aggregate):
    """One login: a family of refresh tokens of which only the newest may be used.

    Using an older one means a token was stolen or replayed: the whole family is revoked.
    """

    TOPIC = "orca.Session"

    class Created(Aggregate.Created):
        TOPIC = "orca.Session.Created"
        user_id: UUID
        username: str
        credentials_version: int
        refresh_id: str
        expires_at: datetime

    class Refreshed(Aggregate.Event):
        TOPIC = "orca.Session.Refreshed"
        refresh_id: str

        def apply(self, aggregate: Session) -> None:
            aggregate.refresh_id = self.refresh_id

    class Revoked(Aggregate.Event):
        TOPIC = "orca.Session.Revoked"
        reason: str

        def apply(self, aggregate: Session) -> None:
            aggregate.revoked = True

    def __init__(
        self,
        user_id: UUID,
        username: str,
        credentials_version: int,
        refresh_id: str,
        expires_at: datetime,
    ) -> None:
        self.user_id = user_id
        self.username = username
        self.credentials_version = credentials_version
        self.refresh_id = refresh_id
        self.expires_at = expires_at
        self.revoked = False

    def rotate(self, presented: str, new_refresh_id: str) -> None:
        """Swap the refresh token; a spent one revokes the family (and raises)."""
        if self.revoked:
            raise Conflict("session revoked")
        if presented != self.refresh_id:
            self.trigger_event(self.Revoked, reason="a spent refresh token was used again")
            return
        self.trigger_event(self.Refreshed, refresh_id=new_refresh_id)

    def revoke(self, reason: str) -> None:
        if not self.revoked:
            self.trigger_event(self.Revoked, reason=reason)
