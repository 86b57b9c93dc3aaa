"""Capped exponential backoff: the one retry rhythm of every loop that retries."""

from __future__ import annotations

import asyncio


class Backoff:
    """Delays of ``first``, twice that, and so on up to ``cap``; ``reset`` after a success."""

    __slots__ = ("_next", "cap", "first")

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        """The delay to wait now; the one after it doubles."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())

    def after(self, failing_for: float) -> float:
        """The delay for a retry after failing for ``failing_for`` seconds in all: as
        long as that (within bounds), so each wait about doubles the last. Stateless,
        for callers that ask more than once per attempt."""
        return min(self.cap, max(self.first, failing_for))
