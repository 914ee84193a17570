"""Rebuild read models from the first event, while the API serves the old ones.

The new tables are built aside (PostgreSQL: a schema of their own; SQLite: a file of their
own) and then switched in with one transaction, so readers see either the old models or the
new ones, never a half-built mix. The live projectors pause for the switch only: each of
their batches holds a shared advisory lock, and the switch takes it exclusively.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from orca.application.app import OrcaApplication
from orca.config import PostgresDsn
from orca.projections.beacon import Beacon
from orca.projections.projector import Projector, catch_up
from orca.projections.reports import REPORTS
from orca.projections.rows import Projection
from orca.projections.store import (
    ACCOUNTS_CHANNEL,
    SWITCH_LOCK,
    TRACKING_TABLE,
    VIEWS_CHANNEL,
    PostgresReadStore,
    ReadStore,
    SQLiteReadStore,
)
from orca.projections.views import READ_MODELS

# The projections ``orca rebuild --projection NAME`` knows.
PROJECTIONS: dict[str, Projection] = {p.name: p for p in (READ_MODELS, REPORTS)}
SHADOW_SCHEMA = "orca_rebuild"
# Events per transaction of the replay: bigger than a live projector's batches, as each one
# costs a few round trips and its rows are read and written together.
REPLAY_BATCH = 10_000
REPLAY_SWITCH_SECONDS = 0.001  # how long a thread of the replay runs before another may

# Events done, events in the log, seconds so far.
Progress = Callable[[int, int, float], None]


def rebuild(
    app: OrcaApplication,
    postgres: PostgresDsn | None,
    sqlite_file: Path,
    progress: Progress,
    names: Sequence[str] = tuple(PROJECTIONS),
) -> dict[str, int]:
    """Replay the log into new tables for the named projections (in one pass: each event is
    read and decoded once), then switch them all in with one transaction; return how many
    events each one applied."""
    if postgres is not None:
        shadow = _postgres_shadow(postgres)
        projectors, applied = _replay(app, shadow, names, progress)
        shadow.create_indexes()  # in one go, while the live projectors still run
        last = _switch_postgres(postgres, projectors)
    else:
        shadow_file = sqlite_file.with_name("rebuild.sqlite3")
        projectors, applied = _replay(app, _sqlite_shadow(shadow_file), names, progress)
        last = _switch_sqlite(sqlite_file, projectors, shadow_file)
    return {name: applied[name] + last[name] for name in applied}


def _replay(
    app: OrcaApplication, shadow: ReadStore, names: Sequence[str], progress: Progress
) -> tuple[list[Projector], dict[str, int]]:
    projectors = [
        Projector(app, shadow, Beacon(), Beacon(), PROJECTIONS[n], batch=REPLAY_BATCH)
        for n in names
    ]
    started = time.monotonic()
    head = app.recorder.max_notification_id() or 0

    def report(position: int) -> None:
        progress(position, max(head, position), time.monotonic() - started)

    # The replay makes many objects and no reference cycles: reference counting frees each
    # batch's, and the collector, set off again and again by so many new objects, would only
    # look through them (and, frozen now, through what exists already) in vain.
    gc.freeze()
    gc.disable()
    # The threads that write a batch and read the next page need the interpreter for a short
    # while between waits on the database; at the default 5 ms a turn, the writes of a batch
    # took longer than applying the next one (and the replay waited for them).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(REPLAY_SWITCH_SECONDS)
    try:
        applied = catch_up(projectors, on_batch=report)
    finally:
        sys.setswitchinterval(switch_interval)
        gc.enable()
        gc.unfreeze()
    report(min(p.position for p in projectors))
    return projectors, applied


def _postgres_shadow(dsn: PostgresDsn) -> PostgresReadStore:
    with dsn.connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SHADOW_SCHEMA}")
    datastore = PostgresDatastore(
        dbname=dsn.dbname, host=dsn.host, port=dsn.port, user=dsn.user,
        password=dsn.password, schema=SHADOW_SCHEMA, pool_size=2,
    )  # fmt: skip
    # The view SQL names its tables without a schema: resolve them in the shadow schema.
    cast(dict[str, Any], datastore.pool.kwargs)["options"] = f"-c search_path={SHADOW_SCHEMA}"
    store = PostgresReadStore(datastore, live=False)
    store.create_table()
    return store


def _switch_postgres(dsn: PostgresDsn, projectors: Sequence[Projector]) -> dict[str, int]:
    names = [p.name for p in projectors]
    with dsn.connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SWITCH_LOCK,))
        applied = catch_up(projectors)  # the last events, while the live projectors wait
        conn.execute(  # the projections not rebuilt keep their positions
            f"INSERT INTO {SHADOW_SCHEMA}.{TRACKING_TABLE} SELECT * FROM public.{TRACKING_TABLE}"
            " WHERE application_name <> ALL(%s) ON CONFLICT (application_name) DO NOTHING",
            (names,),
        )
        for table in (*(t for p in projectors for t in p.projection.tables), TRACKING_TABLE):
            conn.execute(f"DROP TABLE IF EXISTS public.{table}")
            conn.execute(f"ALTER TABLE {SHADOW_SCHEMA}.{table} SET SCHEMA public")
        conn.execute(f"DROP SCHEMA {SHADOW_SCHEMA} CASCADE")
        if READ_MODELS.name in names:  # API processes elsewhere wait on the main views
            position = next(p.position for p in projectors if p.name == READ_MODELS.name)
            conn.execute("SELECT pg_notify(%s, '')", (ACCOUNTS_CHANNEL,))
            conn.execute("SELECT pg_notify(%s, %s)", (VIEWS_CHANNEL, str(position)))
    return applied


def _sqlite_shadow(path: Path) -> ReadStore:
    path.unlink(missing_ok=True)
    store = SQLiteReadStore(SQLiteDatastore(str(path), pool_size=1))
    store.create_table()
    return store


def _switch_sqlite(
    live_file: Path, projectors: Sequence[Projector], shadow_file: Path
) -> dict[str, int]:
    """One write transaction on the live file copies the rebuilt tables in: readers (WAL)
    see the old tables until it commits; writers, the live projectors too, wait for it."""
    names = [(p.name,) for p in projectors]
    conn = sqlite3.connect(live_file, isolation_level=None, timeout=60)
    try:
        conn.execute("ATTACH DATABASE ? AS shadow", (str(shadow_file),))
        # The first write takes the live file's write lock, and only its: BEGIN IMMEDIATE
        # would lock the shadow file too, which the last events are written to.
        conn.execute("BEGIN")
        conn.executemany("DELETE FROM main.tracking WHERE application_name = ?", names)
        applied = catch_up(projectors)  # the last events, while every writer waits
        for table in (t for p in projectors for t in p.projection.tables):
            conn.execute(f"DELETE FROM main.{table}")
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM shadow.{table}")
        # Only the rebuilt projections' positions move; the others keep theirs.
        conn.executemany(
            "INSERT INTO main.tracking SELECT * FROM shadow.tracking WHERE application_name = ?",
            names,
        )
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE shadow")
    finally:
        conn.close()
    shadow_file.unlink()
    return applied
