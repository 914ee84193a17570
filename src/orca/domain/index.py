"""Write-side uniqueness of natural keys (system names, user names).

An index aggregate's id is derived from the key, so two commands claiming the same key
race on the same aggregate version and the event store lets exactly one of them win.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from orca.domain.errors import Conflict

_NAMESPACE = uuid5(NAMESPACE_URL, "https://orca.invalid/natural-keys")


class NameIndex(Aggregate):
    """Maps one natural key (``kind`` + normalised name) to the aggregate that holds it."""

    TOPIC = "orca.NameIndex"

    class Created(Aggregate.Created):
        TOPIC = "orca.NameIndex.Created"
        kind: str
        name: str
        owner_id: UUID

    class Reclaimed(Aggregate.Event):
        TOPIC = "orca.NameIndex.Reclaimed"
        owner_id: UUID

        def apply(self, aggregate: NameIndex) -> None:
            aggregate.owner_id = self.owner_id

    class Released(Aggregate.Event):
        TOPIC = "orca.NameIndex.Released"

        def apply(self, aggregate: NameIndex) -> None:
            aggregate.owner_id = None

    def __init__(self, kind: str, name: str, owner_id: UUID) -> None:
        self.kind = kind
        self.name = name
        self.owner_id: UUID | None = owner_id

    @classmethod
    def create_id(cls, kind: str, name: str) -> UUID:
        return index_id(kind, name)

    def reclaim(self, owner_id: UUID) -> None:
        if self.owner_id is not None:
            raise Conflict(f"{self.kind} name {self.name!r} is already taken")
        self.trigger_event(self.Reclaimed, owner_id=owner_id)

    def release(self) -> None:
        if self.owner_id is not None:
            self.trigger_event(self.Released)


def index_id(kind: str, name: str) -> UUID:
    """Names are unique without regard to case: ``Web-01`` and ``web-01`` are one name."""
    return uuid5(_NAMESPACE, f"{kind}:{name.casefold()}")
