"""Waiting, bounded, for state that lives in another process (Redis, RabbitMQ, a log file)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], interval: float, timeout: float) -> float:
    """Poll ``check`` every ``interval`` seconds until it holds; seconds waited.

    Raises ``TimeoutError`` after ``timeout``: nothing here waits forever.
    """
    began = time.perf_counter()
    async with asyncio.timeout(timeout):
        while True:
            if await check():
                return time.perf_counter() - began
            await asyncio.sleep(interval)
