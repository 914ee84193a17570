"""The eventsourcing Application: persistence and the rules of saving, nothing else."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from itertools import groupby
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper, Transcoder

from orca.application.audit import OrcaMapper
from orca.application.grouping import GroupCommit
from orca.application.transcoder import MsgspecJSONTranscoder
from orca.domain.errors import Conflict, NotFound

A = TypeVar("A", bound=Aggregate)


class OrcaApplication(Application[UUID]):
    """Orca's event store. Every command handler loads and saves aggregates through it."""

    name = "orca"
    is_snapshotting_enabled = False

    def construct_mapper(self) -> Mapper[UUID]:
        """Stamps each stored event with who caused it (see ``audit.acting``)."""
        return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=OrcaMapper)

    def construct_transcoder(self) -> Transcoder:
        transcoder = MsgspecJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def __init__(self, env: dict[str, str], on_saved: Callable[[int], None]) -> None:
        super().__init__(env)
        self._on_saved = on_saved
        self._group = GroupCommit(self.recorder.insert_events)

    def get(self, cls: type[A], aggregate_id: UUID, what: str) -> A:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"{what} {aggregate_id} not found")
        return aggregate

    def find(self, aggregate_id: UUID) -> Aggregate | None:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate

    def get_many(self, cls: type[A], aggregate_ids: Collection[UUID]) -> dict[UUID, A]:
        """The aggregates of these ids, read with one query; those not found (or of another
        type) are left out."""
        return only(cls, self.get_all(aggregate_ids))

    def get_all(self, aggregate_ids: Collection[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates of these ids, of whatever types, read with one query; those not
        found are left out."""
        if not aggregate_ids:
            return {}
        found: dict[UUID, Aggregate] = {}
        stored = self.recorder.select_events_of(aggregate_ids)  # type: ignore[attr-defined]
        for aggregate_id, events in groupby(stored, key=lambda e: e.originator_id):
            aggregate = project_aggregate(None, map(self.mapper.to_domain_event, events))
            if aggregate is not None:
                found[aggregate_id] = aggregate
        return found

    def commit(self, aggregates: Iterable[Aggregate], conflict: str) -> int:
        """Save atomically; return the last notification id (for read-your-writes).

        A concurrent writer that saved the same aggregate version first makes this a
        ``Conflict`` with the given message: nothing of this save is stored. Saves made
        at the same time by other threads may be stored in the same transaction.
        """
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if not events:
            # Nothing changed (a user set to the role they have): what the caller asked for
            # is recorded already, at the latest by now.
            return self.recorder.max_notification_id() or 0
        # Mapped here, in the caller's thread: the mapper stamps the caller's actor.
        stored = [self.mapper.to_stored_event(event) for event in events]
        try:
            position = max(self._group.write(stored))
        except IntegrityError:
            raise Conflict(conflict) from None
        self._on_saved(position)
        return position


def only(cls: type[A], aggregates: Mapping[UUID, Aggregate]) -> dict[UUID, A]:
    """Those of the aggregates that are of this type."""
    return {i: a for i, a in aggregates.items() if isinstance(a, cls)}
