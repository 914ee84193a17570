"""Answers from the read models, remembered until the read models move on.

The read models change only when a projector applies events, and every such batch advances
the views beacon (in this process, or through NOTIFY from another one; a listener that lost
its connection advances it too). So an answer computed while the beacon stood still stays
exact until its next advance, and a busy read endpoint serves the same bytes again instead of
reading and encoding them once per request.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from orca.projections.beacon import Beacon

V = TypeVar("V")


class UntilViewsMove(Generic[V]):
    """A least-recently-used memo of at most ``capacity`` weight, emptied on every advance.

    An answer is kept only if the beacon did not move while it was computed: a batch that
    landed meanwhile may or may not be in it.
    """

    def __init__(
        self, views: Beacon, capacity: int, weigh: Callable[[V], int] = lambda _: 1
    ) -> None:
        self._views = views
        self._capacity = capacity
        self._weigh = weigh
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._seen = views.changes

    def _current(self) -> int:
        now = self._views.changes
        if now != self._seen:
            self._entries.clear()
            self._weight = 0
            self._seen = now
        return now

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[V]]) -> V:
        seen = self._current()
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[0]
        value = await compute()
        weight = self._weigh(value)
        if self._current() == seen and weight <= self._capacity:
            previous = self._entries.pop(key, None)  # a concurrent request computed it too
            if previous is not None:
                self._weight -= previous[1]
            self._weight += weight
            self._entries[key] = (value, weight)
            while self._weight > self._capacity:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._weight -= dropped
        return value
