"""The read-model store: the library's tracking recorder plus our view tables.

Rows and the tracking position are written in one transaction, so each event is applied
exactly once however often a projector restarts. SQL is written once with ``?`` markers.
"""

from __future__ import annotations

import zlib
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, Protocol

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from psycopg.sql import SQL, Composed

from orca.projections.schema import INDEXES, REPORT_TABLES, TABLES

Row = Any  # sqlite3.Row or a psycopg dict row: both are read by column name
VIEWS_CHANNEL = "orca_views"
# Told when a batch changed users or sessions: API processes forget the sessions they checked.
ACCOUNTS_CHANNEL = "orca_accounts"
TRACKING_TABLE = "orca_tracking"  # PostgreSQL's; SQLite's is the library's ``tracking``
# A few rows go in one pipelined round trip of INSERTs; more, in a COPY (two round trips).
COPY_FROM_ROWS = 20
# Each batch holds it shared; a rebuild's switch, exclusively.
SWITCH_LOCK = zlib.crc32(b"orca read-model switch")


class StalePosition(Exception):
    """The read models moved on without this projector (another one, or a rebuild)."""


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None: ...
    def fetchone(self) -> Row | None: ...
    def fetchall(self) -> list[Row]: ...


class ReadStore(Protocol):
    """What projections write through and queries read through."""

    application_name: str

    def create_table(self) -> None: ...
    def max_tracking_id(self, application_name: str) -> int | None: ...
    def write(
        self, tracking: Tracking, after: int | None = None
    ) -> AbstractContextManager[Cursor]: ...
    def direct(self) -> AbstractContextManager[Cursor]: ...
    def active_connections(self) -> int: ...
    def read(self) -> AbstractContextManager[Cursor]: ...
    def read_one(self) -> AbstractContextManager[Cursor]: ...
    def tell_accounts_changed(self, cursor: Cursor) -> None: ...


class _Views:
    """Shared behaviour of the two backends."""

    def _view_statements(self, *, indexes: bool = True) -> list[str]:
        return [*TABLES, *(INDEXES if indexes else ()), *REPORT_TABLES]

    @abstractmethod
    def _cursor(self, *, commit: bool) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _wrap(self, cursor: Any) -> Cursor: ...

    @abstractmethod
    def _track(self, cursor: Any, tracking: Tracking) -> None: ...

    @abstractmethod
    def _position(self, cursor: Any, application_name: str) -> int | None: ...

    def _begin_batch(self, cursor: Any) -> None:
        """Called first in every batch transaction."""

    def tell_accounts_changed(self, cursor: Cursor) -> None:
        """In a batch that changed users or sessions: tell other processes when it commits
        (SQLite has none)."""

    @contextmanager
    def write(self, tracking: Tracking, after: int | None = None) -> Iterator[Cursor]:
        """A batch: rows and the new position in one transaction. With ``after``, the batch
        applies only if the models still stand exactly there (else ``StalePosition``)."""
        with self._cursor(commit=True) as raw:
            self._begin_batch(raw)
            if after is not None and (self._position(raw, tracking.application_name) or 0) != after:
                raise StalePosition(tracking.application_name)
            yield self._wrap(raw)
            self._track(raw, tracking)

    @contextmanager
    def direct(self) -> Iterator[Cursor]:
        """A write outside the event log (operational state such as worker heartbeats)."""
        with self._cursor(commit=True) as raw:
            yield self._wrap(raw)

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        with self._cursor(commit=False) as raw:
            yield self._wrap(raw)

    def read_one(self) -> AbstractContextManager[Cursor]:
        """For a read of one statement (``read`` where it needs no transaction)."""
        return self.read()


class SQLiteReadStore(_Views, SQLiteTrackingRecorder):
    application_name = "orca"

    def active_connections(self) -> int:
        """Open connections of this process's pool (SQLite is embedded)."""
        with self.read() as cur:
            cur.execute("SELECT 1 AS ok")
            cur.fetchone()
        pool = self.datastore.pool
        return pool.num_in_use + pool.num_in_pool

    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + self._view_statements()

    def _cursor(self, *, commit: bool) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=commit)

    def _wrap(self, cursor: Any) -> Cursor:
        return _SQLiteCursor(cursor)

    def _track(self, cursor: Any, tracking: Tracking) -> None:
        self._insert_tracking(cursor, tracking)

    def _position(self, cursor: Any, application_name: str) -> int | None:
        return self._max_tracking_id(application_name, cursor)


@lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


class _SQLiteCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(sql, rows)

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        return self._cursor.fetchall()  # type: ignore[no-any-return]

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        self._cursor.executemany(_insert_sql(table, tuple(columns)), rows)


# The columns' types, by table and columns, as a binary COPY needs them (read once, from the
# database: they are PostgreSQL's built-in types, the same in every schema).
_COPY_TYPES: dict[tuple[str, str], list[int]] = {}


@lru_cache(maxsize=512)
def _to_pyformat(sql: str) -> str:
    return sql.replace("?", "%s")


class _PostgresCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(_to_pyformat(sql), params, prepare=True)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(_to_pyformat(sql), rows)

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        if len(rows) < COPY_FROM_ROWS:
            self.executemany(_insert_sql(table, tuple(columns)), rows)
            return
        names = ", ".join(columns)
        types = _COPY_TYPES.get((table, names))
        if types is None:
            self._cursor.execute(f"SELECT {names} FROM {table} LIMIT 0")
            types = _COPY_TYPES[table, names] = [c.type_code for c in self._cursor.description]
        with self._cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        return self._cursor.fetchall()  # type: ignore[no-any-return]


class PostgresReadStore(_Views, PostgresTrackingRecorder):
    application_name = "orca"

    def active_connections(self) -> int:
        """Connections to this database, from every Orca process."""
        with self.read() as cur:
            cur.execute(
                "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            )
            row = cur.fetchone()
        return int(row["n"]) if row else 0

    def __init__(self, datastore: PostgresDatastore, *, live: bool = True) -> None:
        """A store that is not ``live`` (a rebuild's tables aside) neither takes the switch
        lock nor tells other processes of its progress, and has its secondary indexes only
        once ``create_indexes`` is called."""
        super().__init__(datastore, tracking_table_name=TRACKING_TABLE)
        self.sql_create_statements.extend(
            Composed([SQL(s)]) for s in self._view_statements(indexes=live)
        )
        self._live = live

    def create_indexes(self) -> None:
        """Two at a time, on two connections: the database builds each on one core."""

        def create(statement: str) -> None:
            with self.datastore.transaction(commit=True) as cursor:
                cursor.execute(statement)

        with ThreadPoolExecutor(2, thread_name_prefix="orca-index") as builders:
            list(builders.map(create, INDEXES))

    def _cursor(self, *, commit: bool) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=commit)

    def _wrap(self, cursor: Any) -> Cursor:
        return _PostgresCursor(cursor)

    @contextmanager
    def read(self) -> Iterator[Cursor]:
        """Every statement of a read sees one snapshot: a total and its page of rows, a job
        and its executions agree even while a projector commits between them (under READ
        COMMITTED a page showed 37 jobs of a total of 35).

        In pipeline mode the BEGIN and the SET go out with the first query, and the COMMIT
        waits for no answer of its own: a job and its executions are read in 3 round trips,
        not 5. A read ends with a COMMIT, which for a read-only transaction writes nothing: a
        ROLLBACK would make psycopg forget the connection's prepared statements (after one,
        it cannot know what is still there), and every read would be planned again."""
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            raw = conn.cursor()
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield self._wrap(raw)

    @contextmanager
    def read_one(self) -> Iterator[Cursor]:
        """A read of one statement, which is a snapshot of its own: on an autocommit
        connection, outside any transaction, it is one round trip, where BEGIN and COMMIT
        around it make it two or three."""
        with self.datastore.get_connection() as conn:
            yield self._wrap(conn.cursor())

    def _begin_batch(self, cursor: Any) -> None:
        if self._live:
            # Live batches wait for the disk: the API answers from them as soon as they commit,
            # and a crash must not take an answer back (a job created, then "not found").
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SWITCH_LOCK,), prepare=True)
        else:
            # A rebuild's tables aside are read by no one before the switch, whose (durable)
            # commit flushes them too: their batches need not wait for the disk.
            cursor.execute("SET LOCAL synchronous_commit = off")

    def _position(self, cursor: Any, application_name: str) -> int | None:
        """The position, locked until the batch ends: a second projector's batch waits for
        this one, then finds the position moved (exactly once, whatever leads)."""
        cursor.execute(
            f"INSERT INTO {TRACKING_TABLE} (application_name, notification_id) VALUES (%s, 0)"
            " ON CONFLICT (application_name) DO UPDATE"
            f" SET notification_id = {TRACKING_TABLE}.notification_id RETURNING notification_id",
            (application_name,),
            prepare=True,
        )
        return cursor.fetchone()["notification_id"]  # type: ignore[no-any-return]

    def tell_accounts_changed(self, cursor: Cursor) -> None:
        if self._live:
            cursor.execute("SELECT pg_notify(?, '')", (ACCOUNTS_CHANNEL,))

    def _track(self, cursor: Any, tracking: Tracking) -> None:
        self._insert_tracking(cursor, tracking)
        if self._live and tracking.application_name == self.application_name:
            # Tell API processes and workers elsewhere that the main views moved on.
            cursor.execute(
                "SELECT pg_notify(%s, %s)", (VIEWS_CHANNEL, str(tracking.notification_id))
            )


def build_read_store(datastore: SQLiteDatastore | PostgresDatastore) -> ReadStore:
    if isinstance(datastore, PostgresDatastore):
        return PostgresReadStore(datastore)
    return SQLiteReadStore(datastore)
