"""PostgreSQL LISTEN/NOTIFY fed into beacons: news from other processes, without polling."""

from __future__ import annotations

import logging
import threading

import psycopg

from orca.config import PostgresDsn
from orca.projections.beacon import Beacon

log = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


class PostgresListener:
    """Holds one connection that LISTENs on each channel and advances its beacon.

    A dropped connection is re-opened with backoff; every beacon is then woken, since
    notifications sent meanwhile were lost and the waiters must look for themselves.
    """

    def __init__(self, dsn: PostgresDsn, beacons: dict[str, Beacon]) -> None:
        self._dsn = dsn
        self._beacons = beacons

    def run(self, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                with self._dsn.connect() as conn:
                    for channel in self._beacons:
                        conn.execute(f'LISTEN "{channel}"')
                    failures = 0
                    for beacon in self._beacons.values():
                        beacon.advance()
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            payload = note.payload
                            self._beacons[note.channel].advance(
                                int(payload) if payload.isdigit() else None
                            )
            except psycopg.Error as error:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("listener lost PostgreSQL (%s); reconnecting in %.1fs", error, delay)
                stop.wait(delay)
