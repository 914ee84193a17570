"""A position that only moves forward, and threads that wait for it to move."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Beacon:
    """The last known position of a log or a view.

    ``advance`` is called by whoever moves it (a save, a projector's commit, a NOTIFY from
    another process); waiters wake at once instead of polling.
    """

    def __init__(self, position: int = 0) -> None:
        self._position = position
        self._changes = 0
        self._cond = threading.Condition()
        self._listeners: list[Callable[[], None]] = []

    @property
    def position(self) -> int:
        return self._position

    def advance(self, position: int | None = None) -> None:
        """Move to ``position`` (never backwards); None wakes waiters without a position."""
        with self._cond:
            if position is not None and position > self._position:
                self._position = position
            self._changes += 1
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def on_advance(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (from the advancing thread) on every advance; returns an undo."""
        with self._cond:
            self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def wait_for(self, position: int, timeout: float) -> bool:
        """Block until the beacon reaches ``position``; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._position < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def changes(self) -> int:
        """A token for ``wait_change``: take it before looking, so no advance is missed."""
        return self._changes

    def wait_change(self, since: int, timeout: float) -> bool:
        """Block until an ``advance`` after the one counted in ``since``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._changes != since, timeout)
