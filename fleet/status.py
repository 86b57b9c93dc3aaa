"""``fleet status``: live workers, what they own, and the dispatch backlog."""

from __future__ import annotations

import aio_pika

from broker.names import Names
from broker.redis import connect
from broker.settings import Settings


async def show_status(settings: Settings) -> int:
    names = Names(settings.namespace)
    redis = connect(settings.redis_url)
    try:
        redis_now = await redis.time()
        now_ms = redis_now[0] * 1000 + redis_now[1] // 1000
        workers = await redis.zrange(names.worker_deadlines, 0, -1, withscores=True)
        print(f"namespace {settings.namespace!r}: {len(workers)} worker(s)")
        for raw_id, deadline in workers:
            worker_id = raw_id.decode()
            owned = await redis.scard(names.owns(worker_id))
            alive = await redis.exists(names.alive(worker_id))
            state = "alive" if alive else f"dead for {(now_ms - deadline) / 1000:.1f}s"
            print(f"  {worker_id:<40} {state:<18} {owned} conversation(s)")
    finally:
        await redis.aclose()
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        dispatch = await channel.declare_queue(names.dispatch_queue, durable=True)
        print(f"dispatch backlog: {dispatch.declaration_result.message_count} claim request(s)")
    return 0
