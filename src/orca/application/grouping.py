"""Group commit: saves that arrive while another is being written go together in the next.

Each save is one transaction that locks the event table (notification ids must follow
commit order) and waits for its WAL flush, so concurrent saves queue behind each other
anyway. Written together, the saves of 8 clients creating jobs cost one transaction
instead of 8, and a save that finds no other under way is written at once, alone.

Saves written together are stored together or not at all. If one of them conflicts (its
aggregate was saved by someone else first), each is written again on its own, so that
only the conflicting one fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from eventsourcing.persistence import IntegrityError, StoredEvent

Insert = Callable[[Sequence[StoredEvent]], Sequence[int] | None]


class _Save:
    __slots__ = ("error", "events", "ids", "written")

    def __init__(self, events: Sequence[StoredEvent]) -> None:
        self.events = events
        self.ids: Sequence[int] = ()
        self.error: BaseException | None = None
        self.written = False


class GroupCommit:
    def __init__(self, insert: Insert) -> None:
        self._insert = insert
        self._turn = threading.Condition()
        self._waiting: list[_Save] = []
        self._writing = False

    def write(self, events: Sequence[StoredEvent]) -> Sequence[int]:
        """Store these events atomically; return their notification ids, in order. Raises
        what storing them alone would raise."""
        save = _Save(events)
        with self._turn:
            self._waiting.append(save)
            while self._writing and not save.written:
                self._turn.wait()
            batch: list[_Save] = []
            if not save.written:  # no write under way: this thread writes all that wait
                batch, self._waiting, self._writing = self._waiting, [], True
        if batch:
            try:
                self._write(batch)
            finally:
                with self._turn:
                    self._writing = False
                    self._turn.notify_all()
        if save.error is not None:
            raise save.error
        return save.ids

    def _write(self, batch: list[_Save]) -> None:
        try:
            if len(batch) == 1:
                self._store(batch[0])
                return
            try:
                ids = self._insert([e for save in batch for e in save.events]) or ()
            except IntegrityError:
                for save in batch:
                    self._store(save)
                return
            except BaseException as error:
                for save in batch:
                    save.error = error
                return
            start = 0
            for save in batch:
                save.ids = ids[start : start + len(save.events)]
                start += len(save.events)
        finally:
            for save in batch:
                save.written = True

    def _store(self, save: _Save) -> None:
        try:
            save.ids = self._insert(save.events) or ()
        except BaseException as error:
            save.error = error
