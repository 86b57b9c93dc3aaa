"""Keeps full garbage collections from stalling a worker that holds many loops.

A worker owning thousands of conversations holds millions of long-lived objects.
CPython runs a full collection each time that heap grows by a quarter, and a full
collection scans all of it: measured on a 2-core VM, 0.2 s at 2,500 conversations and
0.9 s at 7,000, finding nothing to collect, long enough for the watchdog to fence the
worker (half the liveness TTL). So after a full collection that took a good part of the
watchdog's budget, the heap is frozen (``gc.freeze``): what lives now is not scanned
again. What dies later among frozen objects, in reference cycles, is not collected
while frozen: little (measured: 3.5 objects per conversation loop ended), but it adds
up; so once the loops alive at the freeze have turned over four times, the heap is
unfrozen, the next full collection reclaims it (one slow collection, which may
fence the worker once), and the heap is frozen again right after. (The heap the
process built to start is frozen once it serves: see ``Service.serving``.)
"""

from __future__ import annotations

import gc
import time
from typing import Any

import structlog

log = structlog.get_logger()

# A frozen heap is unfrozen once this many times the loops alive at the freeze have
# ended since, and at least UNFREEZE_AFTER.
TURNOVER = 4
UNFREEZE_AFTER = 10_000


class Heap:
    """Watches full collections; freezes the heap when they grow slow."""

    def __init__(self, budget: float) -> None:
        self.budget = budget  # the watchdog's: a stall this long fences the worker
        self._started = 0.0
        self._freeze = False  # a slow full collection asked for it
        self._frozen_loops = 0  # loops alive at the last freeze (0: not frozen)
        self._ended = 0  # loops ended since
        self._reclaiming = False  # unfrozen: freeze again after the next full collection

    def watch(self) -> None:
        gc.callbacks.append(self._collecting)

    def close(self) -> None:
        gc.callbacks.remove(self._collecting)

    def tick(self, loops: int) -> None:
        """On the event loop, often: freeze if a slow full collection asked for it."""
        if self._freeze:
            self._freeze = False
            gc.freeze()
            self._frozen_loops, self._ended = max(loops, 1), 0
            log.info("heap_frozen", objects=gc.get_freeze_count(), conversations=loops)

    def loop_ended(self) -> None:
        if not self._frozen_loops:
            return
        self._ended += 1
        if self._ended >= max(UNFREEZE_AFTER, TURNOVER * self._frozen_loops):
            gc.unfreeze()
            log.info("heap_unfrozen", ended=self._ended)
            self._frozen_loops = 0
            self._reclaiming = True

    def _collecting(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic()
            return
        took = time.monotonic() - self._started
        if info["generation"] == 2 and self._reclaiming:
            self._reclaiming = False
            self._freeze = True
        if took > self.budget / 4:
            generation, collected = info["generation"], info["collected"]
            log.warning(
                "gc_pause", seconds=round(took, 3), generation=generation, collected=collected
            )
            if generation == 2:
                self._freeze = True
