"""Feeds the event log into the read models, in batches, exactly once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    Tracking,
)

from orca.application.app import OrcaApplication
from orca.projections.beacon import Beacon
from orca.projections.leader import Leadership
from orca.projections.store import ReadStore, StalePosition
from orca.projections.views import HANDLERS, Handler, iso

log = logging.getLogger(__name__)

BATCH = 500
# Errors of the database itself: wait and retry, never pass an event over for them.
TRANSIENT = (OperationalError, InterfaceError)
# Wake-ups come from saves and NOTIFY; this bounds the delay if one is ever missed.
IDLE_RECHECK_SECONDS = 1.0


class Projector:
    def __init__(
        self,
        app: OrcaApplication,
        store: ReadStore,
        events: Beacon,
        views: Beacon,
        *,
        name: str = "orca",
        handlers: Mapping[type[Any], Handler] = HANDLERS,
    ) -> None:
        """``name`` keys the projection's position: a new name starts from the first event,
        so a new read model added to a running installation fills itself from history."""
        self.name = name
        self._handlers = handlers
        self._app = app
        self._store = store
        self._events = events
        self._views = views
        self.position = store.max_tracking_id(name) or 0
        views.advance(self.position)

    def catch_up(self, on_batch: Callable[[int], None] | None = None) -> int:
        """Apply every event recorded so far; return how many were applied."""
        applied = 0
        while True:
            notifications = self._app.recorder.select_notifications(
                start=self.position, limit=BATCH, inclusive_of_start=False
            )
            if not notifications:
                return applied
            last = notifications[-1].id
            try:
                self._apply(notifications)
            except (IntegrityError, StalePosition):
                # Another projector (or a rebuild) got there first: go on from where it is.
                self.position = self._store.max_tracking_id(self.name) or 0
                continue
            except TRANSIENT:
                raise
            except Exception:
                # One event of the batch cannot be projected: find it, one by one.
                for notification in notifications:
                    self._apply_or_record([notification])
                    self.position = notification.id
            self.position = last
            applied += len(notifications)
            self._views.advance(last)
            if on_batch is not None:
                on_batch(last)

    def _apply(self, notifications: Sequence[Notification]) -> None:
        tracking = Tracking(self.name, notifications[-1].id)
        with self._store.write(tracking, after=self.position) as cur:
            for notification in notifications:
                event = self._app.mapper.to_domain_event(notification)
                handler = self._handlers.get(type(event))
                if handler is None:
                    continue  # an event this projection has no use for
                handler(cur, event, notification.id)

    def _apply_or_record(self, notifications: Sequence[Notification]) -> None:
        """An event that cannot be projected is recorded and passed over, so one bad event
        never stops the read models; a database outage is not such an event."""
        try:
            self._apply(notifications)
        except (IntegrityError, StalePosition, *TRANSIENT):
            raise
        except Exception as error:
            (notification,) = notifications
            log.exception("event %s (%s) cannot be projected", notification.id, notification.topic)
            with self._store.write(
                Tracking(self.name, notification.id), after=self.position
            ) as cur:
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
