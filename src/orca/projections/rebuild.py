"""Rebuild the read models from the first event, while the API serves the old ones.

The new tables are built aside (PostgreSQL: a schema of their own; SQLite: a file of their
own) and then switched in with one transaction, so readers see either the old models or the
new ones, never a half-built mix. The live projector pauses for the switch only: it takes a
shared advisory lock around each batch, and the switch takes it exclusively.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from orca.application.app import OrcaApplication
from orca.config import PostgresDsn
from orca.projections.beacon import Beacon
from orca.projections.projector import Projector
from orca.projections.store import (
    SWITCH_LOCK,
    TRACKING_TABLE,
    PostgresReadStore,
    ReadStore,
    SQLiteReadStore,
)

# The tables the projection writes: rebuilt and switched together.
PROJECTED = (
    "systems",
    "jobs",
    "executions",
    "users",
    "sessions",
    "counters",
    "projection_failures",
)
SHADOW_SCHEMA = "orca_rebuild"

Progress = Callable[[int, int, float], None]  # events done, events in all, seconds so far


def rebuild(
    app: OrcaApplication, postgres: PostgresDsn | None, sqlite_file: Path, progress: Progress
) -> int:
    """Project every event into new tables and switch them in; return the events applied."""
    started = time.monotonic()
    shadow_file = sqlite_file.with_name("rebuild.sqlite3")
    if postgres is not None:
        shadow: ReadStore = _postgres_shadow(postgres)
    else:
        shadow = _sqlite_shadow(shadow_file)
    projector = Projector(app, shadow, Beacon(), Beacon())
    head = app.recorder.max_notification_id() or 0
    applied = projector.catch_up(
        on_batch=lambda position: progress(position, head, time.monotonic() - started)
    )
    if postgres is not None:
        applied += _switch_postgres(postgres, projector)
    else:
        applied += _switch_sqlite(sqlite_file, projector, shadow_file)
    progress(projector.position, projector.position, time.monotonic() - started)
    return applied


def _postgres_shadow(dsn: PostgresDsn) -> ReadStore:
    with dsn.connect() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SHADOW_SCHEMA}")
    datastore = PostgresDatastore(
        dbname=dsn.dbname, host=dsn.host, port=dsn.port, user=dsn.user,
        password=dsn.password, schema=SHADOW_SCHEMA, pool_size=2,
    )  # fmt: skip
    # The view SQL names its tables without a schema: resolve them in the shadow schema.
    cast(dict[str, Any], datastore.pool.kwargs)["options"] = f"-c search_path={SHADOW_SCHEMA}"
    store = PostgresReadStore(datastore)
    store.create_table()
    return store


def _switch_postgres(dsn: PostgresDsn, projector: Projector) -> int:
    with dsn.connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SWITCH_LOCK,))
        applied = projector.catch_up()  # the last events, while the live projector waits
        conn.execute(  # other projections (reports) keep their positions
            f"INSERT INTO {SHADOW_SCHEMA}.{TRACKING_TABLE} SELECT * FROM public.{TRACKING_TABLE}"
            " WHERE application_name <> %s ON CONFLICT (application_name) DO NOTHING",
            (projector.name,),
        )
        for table in (*PROJECTED, TRACKING_TABLE):
            conn.execute(f"DROP TABLE IF EXISTS public.{table}")
            conn.execute(f"ALTER TABLE {SHADOW_SCHEMA}.{table} SET SCHEMA public")
        conn.execute(f"DROP SCHEMA {SHADOW_SCHEMA} CASCADE")
    return applied


def _sqlite_shadow(path: Path) -> ReadStore:
    path.unlink(missing_ok=True)
    store = SQLiteReadStore(SQLiteDatastore(str(path), pool_size=1))
    store.create_table()
    return store


def _switch_sqlite(live_file: Path, projector: Projector, shadow_file: Path) -> int:
    """One write transaction on the live file copies the rebuilt tables in: readers (WAL)
    see the old tables until it commits; writers, the live projector too, wait for it."""
    conn = sqlite3.connect(live_file, isolation_level=None, timeout=60)
    try:
        conn.execute("ATTACH DATABASE ? AS shadow", (str(shadow_file),))
        conn.execute("BEGIN IMMEDIATE")
        applied = projector.catch_up()  # the last events, while every writer waits
        for table in PROJECTED:
            conn.execute(f"DELETE FROM main.{table}")
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM shadow.{table}")
        # Only this projection's position moves: other projections (reports) keep theirs.
        conn.execute("DELETE FROM main.tracking WHERE application_name = ?", (projector.name,))
        conn.execute(
            "INSERT INTO main.tracking SELECT * FROM shadow.tracking WHERE application_name = ?",
            (projector.name,),
        )
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE shadow")
    finally:
        conn.close()
    shadow_file.unlink()
    return applied
