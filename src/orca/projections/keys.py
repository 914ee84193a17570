"""The data keys of the vault, in a table beside the read models (never in the event log)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from orca.projections.store import ReadStore
from orca.projections.views import iso


class SqlKeyStore:
    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def get(self, owner: UUID) -> str | None:
        with self._store.read() as cur:
            cur.execute("SELECT wrapped FROM data_keys WHERE owner = ?", (str(owner),))
            row = cur.fetchone()
        return row["wrapped"] if row is not None else None

    def add(self, owner: UUID, wrapped: str) -> None:
        with self._store.direct() as cur:
            cur.execute(
                "INSERT INTO data_keys (owner, wrapped, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (owner) DO NOTHING",
                (str(owner), wrapped, iso(datetime.now(UTC))),
            )

    def delete(self, owner: UUID) -> None:
        with self._store.direct() as cur:
            cur.execute("DELETE FROM data_keys WHERE owner = ?", (str(owner),))

    def rewrap(self, change: Callable[[UUID, str], str]) -> int:
        """All keys in one transaction: a failure leaves every key as it was."""
        with self._store.direct() as cur:
            cur.execute("SELECT owner, wrapped FROM data_keys")
            rows = [(r["owner"], r["wrapped"]) for r in cur.fetchall()]
            for owner, wrapped in rows:
                cur.execute(
                    "UPDATE data_keys SET wrapped = ? WHERE owner = ?",
                    (change(UUID(owner), wrapped), owner),
                )
        return len(rows)
