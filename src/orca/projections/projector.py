"""Feeds the event log into the read models, in batches, exactly once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    Tracking,
)
from eventsourcing.utils import resolve_topic

from orca.application.app import OrcaApplication
from orca.projections.beacon import Beacon
from orca.projections.events import EventReader
from orca.projections.leader import Leadership
from orca.projections.rows import Handler, Projection, Rows, ignore
from orca.projections.store import ReadStore, StalePosition
from orca.projections.views import iso

log = logging.getLogger(__name__)

# Events per transaction at most: a projector that is behind catches up in big batches; one
# that is not applies what it finds at once, one event if there is one.
BATCH = 2000
# Errors of the database itself: wait and retry, never pass an event over for them.
TRANSIENT = (OperationalError, InterfaceError)
# Wake-ups come from saves and NOTIFY; this bounds the delay if one is ever missed.
IDLE_RECHECK_SECONDS = 1.0


class Decoded:
    """The events of a page, each decoded once, for as many projectors as want it."""

    def __init__(self, read: EventReader) -> None:
        self._read = read
        self._events: dict[int, Any] = {}

    def __call__(self, notification: Notification) -> Any:
        event = self._events.get(notification.id)
        if event is None:
            event = self._events[notification.id] = self._read(notification)
        return event


class Projector:
    def __init__(
        self,
        app: OrcaApplication,
        store: ReadStore,
        events: Beacon,
        views: Beacon,
        projection: Projection,
        batch: int = BATCH,
    ) -> None:
        """The projection's name keys its position: a new name starts from the first event,
        so a new read model added to a running installation fills itself from history.
        ``batch``: events per transaction at most."""
        self.projection = projection
        self.batch = batch
        self.name = projection.name
        self._handlers: dict[str, Handler | None] = {}  # by topic, as the events name them
        self.app = app
        self._store = store
        self._events = events
        self._views = views
        self.position = store.max_tracking_id(self.name) or 0
        views.advance(self.position)

    def catch_up(self, on_batch: Callable[[int], None] | None = None) -> int:
        """Apply every event recorded so far; return how many were applied."""
        return catch_up([self], on_batch)[self.name]

    def apply(self, page: Sequence[Notification], decode: Decoded) -> int:
        """Apply the events of the page that this projector has not applied yet (one batch,
        one transaction); return how many it applied."""
        notifications = [n for n in page if n.id > self.position]
        if not notifications:
            return 0
        try:
            self._apply_or_isolate(notifications, decode)
        except (IntegrityError, StalePosition):
            # Another projector (or a rebuild) got there first: go on from where it is.
            self.position = self._store.max_tracking_id(self.name) or 0
            self._views.advance(self.position)
            return 0
        self._views.advance(self.position)
        return len(notifications)

    def _apply_or_isolate(self, notifications: Sequence[Notification], decode: Decoded) -> None:
        """An event that cannot be projected is found by halving the batch, recorded and
        passed over, so one bad event never stops the read models; a database outage, or
        another projector moving on, is not such an event."""
        try:
            self._apply(notifications, decode)
        except (StalePosition, *TRANSIENT):
            raise
        except Exception as error:
            # A duplicate key is the batch's fault only if no one else has moved on.
            if isinstance(error, IntegrityError) and self._moved_on():
                raise
            if len(notifications) == 1:
                self._record(notifications[0], error)
                return
            half = len(notifications) // 2
            self._apply_or_isolate(notifications[:half], decode)
            self._apply_or_isolate(notifications[half:], decode)

    def _moved_on(self) -> bool:
        return (self._store.max_tracking_id(self.name) or 0) != self.position

    def _apply(self, notifications: Sequence[Notification], decode: Decoded) -> None:
        last = notifications[-1].id
        with self._store.write(Tracking(self.name, last), after=self.position) as cur:
            rows = Rows(cur)
            for notification in notifications:
                handler = self._handler(notification.topic)
                if handler is not None:
                    handler(rows, decode(notification), notification.id)
            rows.flush()
        self.position = last

    def _handler(self, topic: str) -> Handler | None:
        """None for an event this projection has no use for: it is not even decoded."""
        try:
            return self._handlers[topic]
        except KeyError:
            handler = self.projection.handlers.get(resolve_topic(topic))
            self._handlers[topic] = None if handler is ignore else handler
            return self._handlers[topic]

    def _record(self, notification: Notification, error: BaseException) -> None:
        log.error(
            "event %s (%s) cannot be projected by %s",
            notification.id, notification.topic, self.name, exc_info=error,
        )  # fmt: skip
        with self._store.write(Tracking(self.name, notification.id), after=self.position) as cur:
            cur.execute(
                "INSERT INTO projection_failures (projection, position, topic, error,"
                " failed_at) VALUES (?, ?, ?, ?, ?)",
                (
                    self.name,
                    notification.id,
                    notification.topic,
                    f"{type(error).__name__}: {error}"[:2000],
                    iso(datetime.now(UTC)),
                ),
            )
        self.position = notification.id

    def run(self, stop: threading.Event, leadership: Leadership) -> None:
        """While leading: catch up, then wait for news; until ``stop`` is set."""
        while not stop.is_set():
            with leadership.held(stop) as leading:
                self.position = self._store.max_tracking_id(self.name) or 0
                while leading and not stop.is_set() and leadership.still_leading():
                    news = self._events.changes
                    try:
                        self.catch_up()
                    except Exception:
                        log.exception("projection failed; retrying")
                        stop.wait(IDLE_RECHECK_SECONDS)
                        continue
                    self._events.wait_change(news, IDLE_RECHECK_SECONDS)


def catch_up(
    projectors: Sequence[Projector], on_batch: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Apply every event recorded so far to each projector, reading and decoding each event
    once however many projectors use it; return how many events each one applied."""
    app = projectors[0].app
    batch = min(p.batch for p in projectors)
    read = EventReader(app.mapper)
    applied = dict.fromkeys((p.name for p in projectors), 0)

    def page_after(position: int) -> Sequence[Notification]:
        return app.recorder.select_notifications(
            start=position, limit=batch, inclusive_of_start=False
        )

    with ThreadPoolExecutor(1, thread_name_prefix="orca-read-ahead") as reader:
        page = page_after(min(p.position for p in projectors))
        while page:
            # A full page means more is waiting: the database reads the next one meanwhile.
            ahead = reader.submit(page_after, page[-1].id) if len(page) == batch else None
            decoded = Decoded(read)
            for projector in projectors:
                applied[projector.name] += projector.apply(page, decoded)
            position = min(p.position for p in projectors)
            if on_batch is not None:
                on_batch(position)
            # A projector that found others had moved on starts from where they are.
            page = ahead.result() if ahead and position == page[-1].id else page_after(position)
    return applied
