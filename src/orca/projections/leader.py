"""One projector at a time: a PostgreSQL advisory lock, held on a connection of its own.

A standby waits for the lock; when the leader dies its connection closes, PostgreSQL frees
the lock, and the standby takes over. (Two projectors at once would still apply each event
once, thanks to tracking; the lock only saves the wasted work and the conflicts.)
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from orca.config import PostgresDsn

log = logging.getLogger(__name__)


def projection_lock(name: str) -> int:
    """Each projection leads under an advisory lock of its own."""
    return zlib.crc32(f"orca projection {name}".encode())


RETRY_SECONDS = 2.0


class Leadership:
    def __init__(self, dsn: PostgresDsn | None, projection: str) -> None:
        self._dsn = dsn
        self._lock = projection_lock(projection)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    @contextmanager
    def held(self, stop: threading.Event) -> Iterator[bool]:
        """Wait until this process leads (or ``stop``); yields whether it does."""
        if self._dsn is None:  # the embedded SQLite store: one process, always the leader
            yield not stop.is_set()
            return
        while not stop.is_set():
            try:
                conn = self._dsn.connect()
            except psycopg.Error as error:
                log.warning("projector cannot reach PostgreSQL (%s)", error)
                stop.wait(RETRY_SECONDS)
                continue
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock,)).fetchone()
            if row is not None and row[0]:
                log.info("this projector leads")
                self._conn = conn
                try:
                    yield True
                finally:
                    self._conn = None
                    conn.close()
                return
            conn.close()
            log.info("another projector leads; standing by")
            stop.wait(RETRY_SECONDS)
        yield False

    def still_leading(self) -> bool:
        """False once the lock's connection is gone (then another projector may lead)."""
        if self._dsn is None:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True
