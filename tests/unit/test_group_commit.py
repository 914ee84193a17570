"""Saves made while another is being written go together in the next write."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from uuid import uuid4

from eventsourcing.persistence import IntegrityError, StoredEvent

from orca.application.grouping import GroupCommit


def event(topic: str = "t") -> StoredEvent:
    return StoredEvent(originator_id=uuid4(), originator_version=1, topic=topic, state=b"{}")


class Table:
    """An event table: a write under way blocks until released; a write holding a "taken"
    event conflicts, one holding a "down" event fails: either stores nothing."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.rows: list[StoredEvent] = []
        self.first_write = threading.Event()
        self.release = threading.Event()

    def insert(self, events: Sequence[StoredEvent]) -> list[int]:
        self.first_write.set()
        self.release.wait(timeout=10)
        self.writes.append([e.topic for e in events])
        if any(e.topic == "taken" for e in events):
            raise IntegrityError("duplicate key")
        if any(e.topic == "down" for e in events):
            raise ConnectionError("the database went away")
        self.rows.extend(events)
        return list(range(len(self.rows) - len(events) + 1, len(self.rows) + 1))


def write_while_one_is_under_way(table: Table, topics: list[str]) -> dict[str, object]:
    group = GroupCommit(table.insert)
    answers: dict[str, object] = {}

    def save(topic: str) -> None:
        try:
            answers[topic] = group.write([event(topic), event(topic)])
        except (IntegrityError, ConnectionError) as error:
            answers[topic] = error

    first = threading.Thread(target=save, args=("first",))
    first.start()
    assert table.first_write.wait(timeout=10)
    others = [threading.Thread(target=save, args=(t,)) for t in topics]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # they all queue behind the write under way
    table.release.set()
    for thread in [first, *others]:
        thread.join(timeout=10)
    return answers


def test_saves_queued_behind_a_write_are_written_together() -> None:
    table = Table()
    answers = write_while_one_is_under_way(table, ["a", "b", "c"])
    assert table.writes[0] == ["first", "first"]
    assert sorted(table.writes[1]) == ["a", "a", "b", "b", "c", "c"]
    assert len(table.writes) == 2
    # Each save gets the notification ids of its own events.
    for topic in ("first", "a", "b", "c"):
        ids = answers[topic]
        assert isinstance(ids, list) and len(ids) == 2
        assert [table.rows[i - 1].topic for i in ids] == [topic, topic]


def test_a_conflicting_save_fails_alone_and_the_others_are_stored() -> None:
    table = Table()
    answers = write_while_one_is_under_way(table, ["a", "taken", "b"])
    assert isinstance(answers["taken"], IntegrityError)
    assert sorted(e.topic for e in table.rows) == ["a", "a", "b", "b", "first", "first"]
    # The group's write failed as a whole; then each was written on its own.
    assert sorted(map(len, table.writes)) == [2, 2, 2, 2, 6]


def test_a_write_that_fails_for_another_reason_fails_every_save_in_it() -> None:
    """The database went away: whether anything was stored is unknown, so each caller
    hears of it (and asks again), rather than having its events written a second time."""
    table = Table()
    answers = write_while_one_is_under_way(table, ["a", "down"])
    assert isinstance(answers["a"], ConnectionError)
    assert isinstance(answers["down"], ConnectionError)
    assert sorted(e.topic for e in table.rows) == ["first", "first"]
    assert len(table.writes) == 2
