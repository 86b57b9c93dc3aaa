"""Stopping: a task that swallows a cancellation (as ``asyncio.wait_for`` may on
Python 3.11, when the operation it waits for completes as the cancellation lands) is
cancelled again, so that stopping a process never waits for it forever. Serving: a
process freezes the heap it built to start."""

from __future__ import annotations

import asyncio
import gc

import pytest

from broker.lifecycle import Service, cancel_all
from broker.settings import Settings


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # and go on, as if never asked
        await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all([task]), 10)
    assert swallowed.is_set() and task.cancelled()


class Serves(Service):
    """Says it serves, notes how much of the heap was frozen then, and stops."""

    frozen = -1

    async def serve(self) -> None:
        self.serving()
        self.frozen = gc.get_freeze_count()


@pytest.mark.parametrize("own_process", [True, False])
async def test_a_process_freezes_the_heap_it_built_once_it_serves(own_process: bool) -> None:
    gc.unfreeze()
    service = Serves(Settings())
    try:
        await service.main(handle_signals=own_process)
    finally:
        gc.unfreeze()
    assert service.started.is_set()
    # Only a process of its own: a test's process goes on making and dropping objects.
    assert (service.frozen > 0) is own_process
