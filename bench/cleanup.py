"""Delete what a run left in Redis and RabbitMQ: every key, queue and exchange whose
name starts with a prefix (a run's ``bench-<hex>-``, or one fleet's namespace).

The fleet never scans; the benchmark may, to find everything its fleets left.
Queue names come from RabbitMQ (``rabbitmqctl``) and, should that not answer, from
the conversation records in Redis, so keys are deleted last.
"""

from __future__ import annotations

import asyncio
import re

import aio_pika
from aio_pika.abc import AbstractConnection
from redis.asyncio import Redis

from bench import rabbit
from broker.names import Names

# <namespace>:conv:{<conversation id>}:meta, see broker.names
META = re.compile(r"^(?P<ns>.+):conv:\{(?P<cid>[^}]+)\}:meta$")


async def purge(prefix: str, redis_url: str, amqp_url: str) -> int:
    """Delete everything named ``prefix...``; how many queues were deleted."""
    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        queues: set[str] = set()
        exchanges: set[str] = set()
        for key in keys:
            if found := META.match(key.decode(errors="replace")):
                names = Names(found["ns"])
                queues |= {names.conversation_queue(found["cid"]), names.dispatch_queue}
                exchanges |= {names.outbound_exchange}
        try:
            queues |= set(await rabbit.queue_memory(prefix))
            exchanges |= set(await rabbit.exchanges(prefix))
        except (RuntimeError, OSError, TimeoutError):
            pass  # rabbitmqctl is optional here: the records above name the queues
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await delete_queues(connection, sorted(queues))
            channel = await connection.channel()
            for exchange in sorted(exchanges):
                await channel.exchange_delete(exchange)
        for first in range(0, len(keys), 1000):
            await redis.unlink(*keys[first : first + 1000])
    finally:
        await redis.aclose()
    return len(queues)


async def delete_queues(
    connection: AbstractConnection, queues: list[str], channels: int = 8
) -> None:
    """Delete queues over several channels at once: one channel runs one method at a time."""

    async def delete(part: list[str]) -> None:
        channel = await connection.channel()
        for name in part:
            await channel.queue_delete(name)
        await channel.close()

    await asyncio.gather(*(delete(queues[i::channels]) for i in range(channels)))
