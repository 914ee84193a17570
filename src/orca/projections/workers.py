"""Which workers are alive and how busy they are: heartbeats, outside the event log.

A heartbeat every few seconds is operational state, not history worth keeping forever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from orca.projections.store import ReadStore
from orca.projections.views import iso

HEARTBEAT_SECONDS = 5.0
STALE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)


class EngineState(msgspec.Struct, frozen=True):
    workers: int
    capacity: int
    running: int


class Workers:
    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def beat(self, worker_id: str, capacity: int, running: int) -> None:
        with self._store.direct() as cur:
            cur.execute(
                "INSERT INTO workers (id, capacity, running, heartbeat_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET capacity = excluded.capacity,"
                " running = excluded.running, heartbeat_at = excluded.heartbeat_at",
                (worker_id, capacity, running, iso(datetime.now(UTC))),
            )

    def leave(self, worker_id: str) -> None:
        with self._store.direct() as cur:
            cur.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def engine(self) -> EngineState:
        alive_since = iso(datetime.now(UTC) - STALE_AFTER)
        with self._store.read() as cur:
            cur.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(capacity), 0) AS capacity,"
                " COALESCE(SUM(running), 0) AS running FROM workers WHERE heartbeat_at > ?",
                (alive_since,),
            )
            row = cur.fetchone()
        if row is None:
            return EngineState(workers=0, capacity=0, running=0)
        return EngineState(
            workers=int(row["n"]), capacity=int(row["capacity"]), running=int(row["running"])
        )
