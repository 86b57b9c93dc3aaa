"""Notice when the shared Redis or RabbitMQ restarted or dropped us during the run.

Other people's test runs use the same servers (and may stop them on purpose); a run
that lived through such an outage says so next to its figures.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection
from redis.asyncio import Redis

from bench.progress import elapsed, say


class ServiceWatch:
    """Notices a Redis restart or a lost RabbitMQ connection during a run."""

    def __init__(self, redis: Redis, amqp_url: str) -> None:
        self.redis = redis
        self.amqp_url = amqp_url
        self.problems: list[str] = []
        self._redis_run: str | None = None
        self._connection: AbstractConnection | None = None

    async def start(self) -> None:
        self._redis_run = (await self.redis.info("server"))["run_id"]
        self._connection = await aio_pika.connect(self.amqp_url)
        self._connection.close_callbacks.add(self._closed)

    def _closed(self, _: Any, exc: BaseException | None = None) -> None:
        if exc is not None:
            problem = f"RabbitMQ connection lost at {elapsed():.0f} s: {exc!r}"[:200]
            self.problems.append(problem)
            say(f"WARNING: {problem}; figures after this are suspect")

    async def stop(self) -> list[str]:
        if self._connection is not None:
            self._connection.close_callbacks.discard(self._closed)
            if not self._connection.is_closed:
                await self._connection.close()
        try:
            if (await self.redis.info("server"))["run_id"] != self._redis_run:
                self.problems.append("Redis restarted during the run")
        except Exception as exc:
            self.problems.append(f"Redis unreachable at the end: {exc!r}")
        return self.problems
