"""Saves made while another is being written go together in the next transaction
(PostgreSQL: a real event table, held by a table lock so that saves queue up)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import psycopg
import pytest

from orca.application.systems import Credentials, RegisterSystem, Saved, register_system
from orca.bootstrap import Services
from orca.domain.errors import Conflict

pytestmark = pytest.mark.parametrize("settings", ["postgres"], indirect=True)
EVENTS = "orca_events"


def register(services: Services, name: str) -> Saved | Conflict:
    try:
        return register_system(
            services.app,
            services.vault,
            RegisterSystem(
                name=name, hostname="127.0.0.1", port=22, system_type="linux", username="u",
                credentials=Credentials(password="pw"),
            ),
            by="admin",
        )  # fmt: skip
    except Conflict as conflict:
        return conflict


@contextmanager
def writes_held(services: Services) -> Iterator[psycopg.Connection]:
    """The event table locked as a save locks it: saves wait until the block ends."""
    assert services.settings.database_url is not None
    with psycopg.connect(services.settings.database_url) as conn:
        conn.execute(f"LOCK TABLE {EVENTS} IN EXCLUSIVE MODE")
        yield conn
        conn.commit()


def waiting_for_the_lock(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted", (EVENTS,)
    ).fetchone()
    return row[0] if row else 0


def save_while_one_waits(services: Services, names: list[str]) -> dict[str, Saved | Conflict]:
    """ "first" is saved and waits for the lock; then ``names`` are saved meanwhile."""
    answers: dict[str, Saved | Conflict] = {}

    def save(key: str, name: str) -> None:
        answers[key] = register(services, name)

    with writes_held(services) as held:
        first = threading.Thread(target=save, args=("first", "first"))
        first.start()
        deadline = time.monotonic() + 10
        while not waiting_for_the_lock(held):
            assert time.monotonic() < deadline, "the first save never reached the table"
            time.sleep(0.01)
        others = [threading.Thread(target=save, args=(f"{n}#{i}", n)) for i, n in enumerate(names)]
        for thread in others:
            thread.start()
        time.sleep(0.3)  # they queue behind the first, which holds the group's turn
    for thread in [first, *others]:
        thread.join(timeout=20)
    return answers


def transaction_of(services: Services, aggregate_id: UUID) -> set[int]:
    assert services.settings.database_url is not None
    with psycopg.connect(services.settings.database_url) as conn:
        rows = conn.execute(
            f"SELECT xmin::text::bigint FROM {EVENTS} WHERE originator_id = %s", (aggregate_id,)
        ).fetchall()
    return {r[0] for r in rows}


def test_saves_queued_behind_a_write_are_stored_in_one_transaction(services: Services) -> None:
    answers = save_while_one_waits(services, ["a", "b", "c"])
    saved = {key: a for key, a in answers.items() if isinstance(a, Saved)}
    assert sorted(saved) == ["a#0", "b#1", "c#2", "first"]
    first = transaction_of(services, saved.pop("first").id)
    together = set().union(*(transaction_of(services, s.id) for s in saved.values()))
    assert len(first) == 1 and len(together) == 1 and first != together


def test_a_conflicting_save_in_a_group_fails_alone(services: Services) -> None:
    """Two registrations of one name wait together: the group's write conflicts, each save
    is then written alone, and only the second of the name fails."""
    answers = save_while_one_waits(services, ["twice", "twice", "other"])
    twice = [answers["twice#0"], answers["twice#1"]]
    assert sorted(type(a).__name__ for a in twice) == ["Conflict", "Saved"]
    other = answers["other#2"]
    assert isinstance(other, Saved) and transaction_of(services, other.id)  # it is stored
