"""Stopping: a task that swallows a cancellation (as ``asyncio.wait_for`` may on
Python 3.11, when the operation it waits for completes as the cancellation lands) is
cancelled again, so that stopping a process never waits for it forever."""

from __future__ import annotations

import asyncio

from broker.lifecycle import cancel_all


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
