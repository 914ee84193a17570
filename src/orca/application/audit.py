"""Who did what, when: every event is stamped with its actor, and the log reads back in order.

The actor (a user, a worker, the command line) and the HTTP request id travel in a context
variable set where a command enters Orca; the mapper stamps them on every event it stores.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

_ACTING: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "orca_acting", default=None
)
META = "_meta"
# Fields shown as a placeholder: ciphertext and hashes mean nothing to a reader, and even
# sealed secrets stay out of audit output.
REDACTED = {"sealed_credentials": "[sealed]", "password_hash": "[redacted]"}
SCAN_LIMIT = 10_000


@contextmanager
def acting(actor: str, request_id: str | None = None) -> Iterator[None]:
    """Every event saved inside this block records ``actor`` (and the request it came from)."""
    meta = {"actor": actor} | ({"request_id": request_id} if request_id else {})
    token = _ACTING.set(meta)
    try:
        yield
    finally:
        _ACTING.reset(token)


class OrcaMapper(Mapper[UUID]):
    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        state[META] = _ACTING.get() or {"actor": "system"}
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=get_topic(type(domain_event)),
            state=self.transcoder.encode(state),
        )


class AuditEntry(msgspec.Struct, frozen=True):
    position: int | None  # in the whole log; None when read aggregate by aggregate
    timestamp: str
    actor: str
    request_id: str | None
    aggregate_id: str
    aggregate_version: int
    event_type: str
    data: dict[str, Any]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def entry(position: int | None, event: Any) -> AuditEntry:
    state = dict(vars(event))
    meta = state.pop(META, None) or {"actor": "unknown"}
    data: dict[str, Any] = {
        k: REDACTED.get(k, v)
        for k, v in state.items()
        if k not in ("originator_id", "originator_version", "timestamp", "originator_topic")
    }
    if "changes" in data:  # an update may replace sealed credentials
        data["changes"] = {k: REDACTED.get(k, v) for k, v in data["changes"].items()}
    return AuditEntry(
        position=position,
        timestamp=event.timestamp.isoformat(),
        actor=meta.get("actor", "unknown"),
        request_id=meta.get("request_id"),
        aggregate_id=str(event.originator_id),
        aggregate_version=event.originator_version,
        event_type=type(event).TOPIC,
        data=_jsonable(data),
    )


def read_log(
    app: Any,
    *,
    after: int,
    limit: int,
    aggregate_id: str | None = None,
    types: Sequence[str] = (),
) -> tuple[list[AuditEntry], int]:
    """Entries after ``after`` in log order, and the position to continue from.

    With an aggregate filter at most ``SCAN_LIMIT`` events are looked at per call; the
    returned position lets the caller carry on where the scan stopped.
    """
    found: list[AuditEntry] = []
    position = after
    scanned = 0
    while len(found) < limit and scanned < SCAN_LIMIT:
        batch = app.recorder.select_notifications(
            start=position, limit=min(500, SCAN_LIMIT - scanned), topics=types,
            inclusive_of_start=False,
        )  # fmt: skip
        if not batch:
            break
        for notification in batch:
            position = notification.id
            scanned += 1
            if aggregate_id is not None and str(notification.originator_id) != aggregate_id:
                continue
            found.append(entry(notification.id, app.mapper.to_domain_event(notification)))
            if len(found) == limit:
                break
    return found, position


class History(msgspec.Struct, frozen=True):
    aggregate_id: str
    version: int
    state: dict[str, Any]
    events: list[AuditEntry]


def history(app: Any, aggregate_id: UUID, at: datetime | int | None = None) -> History | None:
    """One aggregate's events, and its state as it was at a version or a moment (or now)."""
    events = [
        app.mapper.to_domain_event(stored) for stored in app.recorder.select_events(aggregate_id)
    ]
    if not events:
        return None
    if isinstance(at, int):
        events = events[:at]
    elif isinstance(at, datetime):
        events = [e for e in events if e.timestamp <= at]
    if not events:
        return History(aggregate_id=str(aggregate_id), version=0, state={}, events=[])
    aggregate = app.repository.get(aggregate_id, version=events[-1].originator_version)
    state = {
        k: REDACTED.get(k, v)
        for k, v in vars(aggregate).items()
        if not k.startswith("_") and k != "pending_events"
    }
    return History(
        aggregate_id=str(aggregate_id),
        version=aggregate.version,
        state=_jsonable(state),
        events=[entry(None, e) for e in events],
    )


def as_json_line(item: AuditEntry) -> str:
    return msgspec.json.encode(item).decode()
