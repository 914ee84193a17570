"""Read answers are served again only while the read models stand still."""

from __future__ import annotations

import asyncio

from orca.http.cache import UntilViewsMove
from orca.projections.beacon import Beacon


class Reads:
    """Counts how often the read models were really read."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> str:
        self.count += 1
        return f"answer {self.count}"


def test_an_answer_is_served_again_until_the_views_move() -> None:
    views = Beacon()
    cache: UntilViewsMove[str] = UntilViewsMove(views, 10)
    read = Reads()

    async def scenario() -> list[str]:
        answers = [await cache.get("jobs", read), await cache.get("jobs", read)]
        views.advance(1)
        answers.append(await cache.get("jobs", read))
        views.advance()  # a listener that reconnected: notifications may have been lost
        answers.append(await cache.get("jobs", read))
        return answers

    assert asyncio.run(scenario()) == ["answer 1", "answer 1", "answer 2", "answer 3"]


def test_an_answer_read_while_the_views_moved_is_not_kept() -> None:
    views = Beacon()
    cache: UntilViewsMove[str] = UntilViewsMove(views, 10)
    reads = 0

    async def read_during_a_batch() -> str:
        nonlocal reads
        reads += 1
        if reads == 1:
            views.advance(7)  # a projector committed while this read ran
        return f"answer {reads}"

    async def scenario() -> list[str]:
        return [
            await cache.get("k", read_during_a_batch),
            await cache.get("k", read_during_a_batch),
        ]

    assert asyncio.run(scenario()) == ["answer 1", "answer 2"]


def test_the_least_recently_used_answers_go_first_when_full() -> None:
    cache: UntilViewsMove[str] = UntilViewsMove(Beacon(), capacity=12, weigh=len)

    async def fixed(value: str) -> str:
        return value

    async def scenario() -> list[str]:
        await cache.get("a", lambda: fixed("aaaa"))
        await cache.get("b", lambda: fixed("bbbb"))
        await cache.get("a", lambda: fixed("new a"))  # a is used again: b is now the oldest
        await cache.get("c", lambda: fixed("cccccc"))  # 4 + 4 + 6 > 12: b goes
        await cache.get("huge", lambda: fixed("h" * 13))  # never kept: heavier than it all
        # An empty answer weighs nothing: reading it again evicts no one.
        return [await cache.get(key, lambda: fixed("")) for key in ("a", "b", "c", "huge")]

    assert asyncio.run(scenario()) == ["aaaa", "", "cccccc", ""]
