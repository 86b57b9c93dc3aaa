"""A thread that notices when the worker's event loop stops turning.

A blocked loop (a CPU-bound or synchronous agent, a stuck C call) renews nothing and
answers nothing, yet every coroutine resumes when it unblocks as if no time had
passed. The broker hands what the worker held to others once its AMQP heartbeat
lapses; this watchdog, which does not depend on the loop, marks the stall, so that
the worker fences itself the moment its loop turns again, before anything else.
"""

from __future__ import annotations

import asyncio
import threading
import time


class Watchdog:
    """Flags a stall of the event loop longer than ``budget`` seconds."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.stalled = threading.Event()
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    async def pulse(self) -> None:
        """Runs on the loop: proves it turns, several times per budget."""
        self._thread.start()
        try:
            while True:
                self._last = time.monotonic()
                await asyncio.sleep(self.budget / 4)
        finally:
            self._stop.set()

    def silent_for(self) -> float:
        """Seconds since the loop last proved it turns (thread-safe: one float)."""
        return time.monotonic() - self._last

    def _watch(self) -> None:
        while not self._stop.wait(self.budget / 4):
            if time.monotonic() - self._last > self.budget:
                self.stalled.set()
