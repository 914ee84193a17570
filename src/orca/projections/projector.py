"""Feeds the event log into the read models, in batches, exactly once."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any, NamedTuple

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, Tracking
from eventsourcing.utils import resolve_topic

from orca.application.app import OrcaApplication
from orca.application.recorder import Record
from orca.projections.beacon import Beacon
from orca.projections.events import EventReader, Read
from orca.projections.leader import Leadership
from orca.projections.rows import Derive, Handler, Projection, Row, Rows, ignore
from orca.projections.store import Cursor, ReadStore, StalePosition
from orca.projections.views import ACCOUNT_TABLES, iso

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
        self.events: dict[int, Any] = {}  # by position: those decoded so far

    def __call__(self, record: Record) -> Any:
        try:
            return self.events[record.id]
        except KeyError:
            event = self.events[record.id] = self._read(record)
            return event

    def ahead(self, page: Sequence[Record], projectors: Sequence[Projector]) -> None:
        """Decode now every event of the page that a projector will apply."""
        readers: dict[str, Read | None] = {}  # None: no projector applies them
        events = self.events
        for record in page:
            topic = record.topic
            if topic in readers:
                read = readers[topic]
            else:
                wanted = any(p.handles(topic) for p in projectors)
                read = readers[topic] = self._read.reader(topic) if wanted else None
            if read is not None:
                events[record.id] = read(record)


class _History:
    """The log as a projection's derived rows are made from it."""

    def __init__(self, app: OrcaApplication) -> None:
        self._recorder = app.recorder
        self._read = EventReader(app.mapper)

    def events_of(self, originator_ids: Sequence[str], until: int) -> list[tuple[type, Any]]:
        records = self._recorder.select_records_of(originator_ids, until)  # type: ignore[attr-defined]
        return [(resolve_topic(r.topic), self._read(r)) for r in records]


class _Flight(NamedTuple):
    """A batch whose writes are under way."""

    written: Future[None]
    page: Sequence[Record]
    decode: Decoded
    rows: Rows
    last: int  # its last event's position
    events: int  # how many


class _Use(NamedTuple):
    """What a projection does with the events of one topic."""

    handler: Handler | None  # None: it has no use for them, they are not even decoded
    own_table: str | None  # the table of their aggregate's row that the handler reads first


class Projector:
    def __init__(
        self,
        app: OrcaApplication,
        store: ReadStore,
        events: Beacon,
        views: Beacon,
        projection: Projection,
        batch: int = BATCH,
        *,
        accounts: Beacon | None = None,
    ) -> None:
        """The projection's name keys its position: a new name starts from the first event,
        so a new read model added to a running installation fills itself from history.
        ``batch``: events per transaction at most. ``accounts`` advances after each batch
        that changed users or sessions."""
        self.projection = projection
        self.batch = batch
        self.name = projection.name
        self._topics: dict[str, _Use] = {}  # by topic, as the events name them
        self.app = app
        self._store = store
        self._events = events
        self._views = views
        self._accounts = accounts
        self._flight: _Flight | None = None  # the batch being written, if any
        self._history = _History(app)
        self.position = store.max_tracking_id(self.name) or 0
        views.advance(self.position)

    def catch_up(self, on_batch: Callable[[int], None] | None = None) -> int:
        """Apply every event recorded so far; return how many were applied."""
        return catch_up([self], on_batch)[self.name]

    def handles(self, topic: str) -> bool:
        return self._use(topic).handler is not None

    @property
    def ahead(self) -> int:
        """The position after the batch being written (``position`` if there is none)."""
        return self.position if self._flight is None else self._flight.last

    def apply_behind(self, page: Sequence[Record], decode: Decoded, writer: Executor) -> int:
        """Like ``apply``, but the batch's writes and its commit run on ``writer``, so that
        the caller can read and decode the next page, and apply it on top of this one, while
        the database takes them in; ``settle`` waits for them. Each call settles the batch
        written before; return how many events that one (or, after an error, this one)
        applied. A batch whose writes fail is rolled back and applied again by ``apply``,
        which isolates a bad event and finds a projector that moved on; the batch after it,
        made on top of it, fails with it, and is applied again after it."""
        records = self._unapplied(page, self.ahead)
        if not records:
            return 0
        before = self._flight
        try:
            transaction, rows = self._begin(records, decode, before)
        except Exception:
            return self.settle() + self.apply(page, decode)
        written = writer.submit(self._commit, transaction, rows)
        self._flight = _Flight(written, page, decode, rows, records[-1].id, len(records))
        return self._settle(before)

    def forget_flight(self) -> None:
        """Let a batch being written go unsettled: if it committed, the next batch finds the
        position moved and starts from it."""
        self._flight = None

    def settle(self) -> int:
        """Wait for the batch being written, if any; return how many events it applied."""
        flight, self._flight = self._flight, None
        return self._settle(flight)

    def _settle(self, flight: _Flight | None) -> int:
        if flight is None:
            return 0
        try:
            flight.written.result()
        except Exception:
            return self.apply(flight.page, flight.decode)
        self._committed(flight.last, flight.rows)
        self._views.advance(self.position)
        return flight.events

    def apply(self, page: Sequence[Record], decode: Decoded) -> int:
        """Apply the events of the page that this projector has not applied yet (one batch,
        one transaction); return how many it applied."""
        records = self._unapplied(page, self.position)
        if not records:
            return 0
        try:
            self._apply_or_isolate(records, decode)
        except (IntegrityError, StalePosition):
            # Another projector (or a rebuild) got there first: go on from where it is.
            self.position = self._store.max_tracking_id(self.name) or 0
            self._views.advance(self.position)
            return 0
        self._views.advance(self.position)
        return len(records)

    @staticmethod
    def _unapplied(page: Sequence[Record], position: int) -> Sequence[Record]:
        """The events of the page after ``position`` (usually all of them)."""
        if page and page[0].id > position:
            return page
        return [r for r in page if r.id > position]

    def _apply_or_isolate(self, records: Sequence[Record], decode: Decoded) -> None:
        """An event that cannot be projected is found by halving the batch, recorded and
        passed over, so one bad event never stops the read models; a database outage, or
        another projector moving on, is not such an event."""
        try:
            self._apply(records, decode)
        except (StalePosition, *TRANSIENT):
            raise
        except Exception as error:
            # A duplicate key is the batch's fault only if no one else has moved on.
            if isinstance(error, IntegrityError) and self._moved_on():
                raise
            if len(records) == 1:
                self._record_failure(records[0], error)
                return
            half = len(records) // 2
            self._apply_or_isolate(records[:half], decode)
            self._apply_or_isolate(records[half:], decode)

    def _moved_on(self) -> bool:
        return (self._store.max_tracking_id(self.name) or 0) != self.position

    def _apply(self, records: Sequence[Record], decode: Decoded) -> None:
        transaction, rows = self._begin(records, decode)
        self._commit(transaction, rows)
        self._committed(records[-1].id, rows)

    def _committed(self, last: int, rows: Rows) -> None:
        """The batch up to ``last`` is in the read models (before the views advance: whoever
        waits for them finds a session ended by the batch ended)."""
        self.position = last
        if self._accounts is not None and _changes_accounts(rows):
            self._accounts.advance()

    def _commit(self, transaction: ExitStack, rows: Rows) -> None:
        """Write the batch's rows and commit it."""
        with transaction:
            rows.flush()
            if _changes_accounts(rows):
                self._store.tell_accounts_changed(rows.cursor)

    def _begin(
        self, records: Sequence[Record], decode: Decoded, before: _Flight | None = None
    ) -> tuple[ExitStack, Rows]:
        """The handlers' changes, in memory until ``Rows.flush``, and the batch's transaction,
        opened when a handler first needs the database (at the latest by the flush), on top
        of ``before``; closing the transaction commits it (or, after an error, rolls it
        back)."""
        transaction = ExitStack()
        after = self.position if before is None else before.last
        tracking = Tracking(self.name, records[-1].id)

        def cursor() -> Cursor:
            if before is not None:
                before.written.result()  # its rows first (this batch is made on top of them)
            return transaction.enter_context(self._store.write(tracking, after=after))

        with ExitStack() as undo:
            undo.push(transaction)  # a handler that fails rolls the batch back
            rows = Rows(cursor, None if before is None else before.rows, self._derived(after))
            for table, keys in self._own_rows(records).items():
                rows.load(table, keys)
            topics, events = self._topics, decode.events
            for record in records:  # ``_use`` and ``decode`` inlined: the loop of a rebuild
                use = topics.get(record.topic) or self._use(record.topic)
                if use.handler is not None:
                    event = events.get(record.id)
                    use.handler(rows, decode(record) if event is None else event, record.id)
            rows.applied()
            undo.pop_all()
        return transaction, rows

    def _derived(self, after: int) -> dict[str, Callable[[Sequence[Any]], Iterable[Row]]]:
        """What makes the projection's derived rows as the log up to ``after`` leaves them."""
        history = self._history

        def bind(derive: Derive) -> Callable[[Sequence[Any]], Iterable[Row]]:
            return lambda keys: derive(history, keys, after)

        return {table: bind(derive) for table, derive in self.projection.derived.items()}

    def _use(self, topic: str) -> _Use:
        """What this projection does with the events of a topic, worked out once."""
        try:
            return self._topics[topic]
        except KeyError:
            cls = resolve_topic(topic)
            handler = self.projection.handlers.get(cls)
            use = self._topics[topic] = _Use(
                None if handler is ignore else handler, self.projection.own_rows.get(cls)
            )
            return use

    def _own_rows(self, records: Sequence[Record]) -> dict[str, list[str]]:
        """The rows of their own aggregates that the records' handlers read, by table."""
        wanted: dict[str, list[str]] = defaultdict(list)
        topics = self._topics
        for record in records:
            table = (topics.get(record.topic) or self._use(record.topic)).own_table
            if table is not None:
                wanted[table].append(record.originator_id)
        return wanted

    def _record_failure(self, record: Record, error: BaseException) -> None:
        log.error(
            "event %s (%s) cannot be projected by %s",
            record.id, record.topic, self.name, exc_info=error,
        )  # fmt: skip
        with self._store.write(Tracking(self.name, record.id), after=self.position) as cur:
            cur.execute(
                "INSERT INTO projection_failures (projection, position, topic, error,"
                " failed_at) VALUES (?, ?, ?, ?, ?)",
                (
                    self.name,
                    record.id,
                    record.topic,
                    f"{type(error).__name__}: {error}"[:2000],
                    iso(datetime.now(UTC)),
                ),
            )
        self.position = record.id

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
                    if self._events.wait_change(news, IDLE_RECHECK_SECONDS):
                        stop.wait(self.projection.gather_seconds)


def catch_up(
    projectors: Sequence[Projector], on_batch: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Apply every event recorded so far to each projector, reading and decoding each event
    once however many projectors use it; return how many events each one applied."""
    app = projectors[0].app
    batch = min(p.batch for p in projectors)
    read = EventReader(app.mapper)
    applied = dict.fromkeys((p.name for p in projectors), 0)

    def page_after(position: int) -> Sequence[Record]:
        page: list[Record] = app.recorder.select_records(position, batch)  # type: ignore[attr-defined]
        return page

    with (
        ThreadPoolExecutor(1, thread_name_prefix="orca-read-ahead") as reader,
        # One thread a projector: their transactions are independent, and the database
        # takes them in side by side.
        ThreadPoolExecutor(len(projectors), thread_name_prefix="orca-write-behind") as writer,
    ):
        try:
            page, decoded = page_after(min(p.position for p in projectors)), Decoded(read)
            while page:
                following: Sequence[Record] | None = None
                if len(page) < batch:  # the last page: applied at once
                    for projector in projectors:
                        applied[projector.name] += projector.settle()
                        applied[projector.name] += projector.apply(page, decoded)
                else:
                    # More is waiting: the database reads the next page while this one is
                    # applied, and takes in this one's writes while the next one is decoded
                    # and applied.
                    ahead = reader.submit(page_after, page[-1].id)
                    for projector in projectors:
                        applied[projector.name] += projector.apply_behind(page, decoded, writer)
                    following, next_decoded = ahead.result(), Decoded(read)
                    next_decoded.ahead(following, projectors)
                if on_batch is not None:
                    on_batch(min(p.position for p in projectors))
                if following is not None and all(p.ahead == page[-1].id for p in projectors):
                    page, decoded = following, next_decoded
                else:  # a projector that found others had moved on starts from where they are
                    for projector in projectors:
                        applied[projector.name] += projector.settle()
                    page, decoded = page_after(min(p.position for p in projectors)), Decoded(read)
            for projector in projectors:
                applied[projector.name] += projector.settle()
        finally:  # after an error: a batch that was being written is applied again, if need be
            for projector in projectors:
                projector.forget_flight()
    return applied


def _changes_accounts(rows: Rows) -> bool:
    """Whether the batch wrote what a session check reads."""
    return not ACCOUNT_TABLES.isdisjoint(rows.written)
