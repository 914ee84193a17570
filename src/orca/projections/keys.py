"""The data keys of the vault, in a table beside the read models (never in the event log)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime
from uuid import UUID

from orca.projections.store import ReadStore
from orca.projections.views import iso


class SqlKeyStore:
    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def get(self, owners: Collection[UUID]) -> dict[UUID, str]:
        if not owners:
            return {}
        marks = ", ".join("?" * len(owners))
        with self._store.read_one() as cur:
            cur.execute(
                f"SELECT owner, wrapped FROM data_keys WHERE owner IN ({marks})",
                tuple(str(o) for o in owners),
            )
            return {UUID(row["owner"]): row["wrapped"] for row in cur.fetchall()}

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
