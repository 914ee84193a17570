"""A person or program allowed to use Orca's API."""

from __future__ import annotations

from typing import Literal

from eventsourcing.domain import Aggregate

Role = Literal["admin", "operator", "viewer"]


class User(Aggregate):
    """Credentials are an argon2id hash made by the application; never the password."""

    TOPIC = "orca.User"

    class Created(Aggregate.Created):
        TOPIC = "orca.User.Created"
        username: str
        password_hash: str
        role: str

    def __init__(self, username: str, password_hash: str, role: str) -> None:
        self.username = username
        self.password_hash = password_hash
        self.role = role
        self.is_active = True
