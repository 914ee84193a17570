"""Which workers are alive and how busy they are: heartbeats, outside the event log.

A heartbeat every few seconds is operational state, not history worth keeping forever.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec

from orca.projections.store import ReadStore
from orca.projections.views import iso

# The heartbeat is each worker's lease on the executions it runs: when a lease runs out
# (six missed beats), another worker finishes them as lost.
BEATS_PER_LEASE = 6
FORGET_AFTER = timedelta(days=1)
ENGINE_FRESH_SECONDS = 1.0


class EngineState(msgspec.Struct, frozen=True):
    workers: int
    capacity: int
    running: int


class Workers:
    def __init__(self, store: ReadStore, lease_seconds: float) -> None:
        self._store = store
        self.lease = timedelta(seconds=lease_seconds)
        self.heartbeat_seconds = lease_seconds / BEATS_PER_LEASE
        self._engine = (-ENGINE_FRESH_SECONDS, EngineState(workers=0, capacity=0, running=0))

    def beat(self, worker_id: str, capacity: int, running: int) -> None:
        with self._store.direct() as cur:
            cur.execute(
                "INSERT INTO workers (id, capacity, running, heartbeat_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET capacity = excluded.capacity,"
                " running = excluded.running, heartbeat_at = excluded.heartbeat_at",
                (worker_id, capacity, running, iso(datetime.now(UTC))),
            )
            cur.execute(
                "DELETE FROM workers WHERE heartbeat_at < ?",
                (iso(datetime.now(UTC) - FORGET_AFTER),),
            )

    def leave(self, worker_id: str) -> None:
        with self._store.direct() as cur:
            cur.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def orphans(self) -> list[str]:
        """Running executions whose worker stopped beating: it died, or lost its database."""
        alive_since = iso(datetime.now(UTC) - self.lease)
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT e.id FROM executions e LEFT JOIN workers w ON w.id = e.worker_id"
                " AND w.heartbeat_at > ? WHERE e.status = 'running' AND w.id IS NULL",
                (alive_since,),
            )
            return [r["id"] for r in cur.fetchall()]

    def recent_engine(self) -> EngineState | None:
        """The last answer of ``engine`` if it is less than a second old (heartbeats come
        every few seconds anyway), without touching the database."""
        taken, state = self._engine
        return state if time.monotonic() - taken < ENGINE_FRESH_SECONDS else None

    def engine(self) -> EngineState:
        """Live workers, their slots and running executions."""
        recent = self.recent_engine()
        if recent is not None:
            return recent
        alive_since = iso(datetime.now(UTC) - self.lease)
        with self._store.read_one() as cur:
            cur.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(capacity), 0) AS capacity,"
                " COALESCE(SUM(running), 0) AS running FROM workers WHERE heartbeat_at > ?",
                (alive_since,),
            )
            row = cur.fetchone()
        state = (
            EngineState(workers=0, capacity=0, running=0)
            if row is None
            else EngineState(
                workers=int(row["n"]), capacity=int(row["capacity"]), running=int(row["running"])
            )
        )
        self._engine = (time.monotonic(), state)
        return state
