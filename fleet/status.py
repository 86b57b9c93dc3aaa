"""``fleet status``: live workers, what they own, and the dispatch backlog."""

from __future__ import annotations

from typing import cast

from broker.amqp import Broker
from broker.names import Names
from broker.redis import connect, text
from broker.settings import Settings


async def show_status(settings: Settings) -> int:
    names = Names(settings.namespace)
    redis = connect(settings.redis_url)
    try:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
        workers = cast(
            list[tuple[bytes, float]],
            await redis.zrange(names.deadlines("worker"), 0, -1, withscores=True),
        )
        print(f"namespace {settings.namespace!r}: {len(workers)} worker(s)")
        for raw_id, deadline in workers:
            worker_id = text(raw_id)
            owned = await redis.scard(names.owns(worker_id))
            alive = await redis.exists(names.alive("worker", worker_id))
            state = "alive" if alive else f"dead for {(now_ms - deadline) / 1000:.1f}s"
            print(f"  {worker_id:<40} {state:<18} {owned} conversation(s)")
    finally:
        await redis.aclose()
    broker = Broker(settings.amqp_url, names, name="fleet-status")
    await broker.connect(declare=False)
    try:
        backlog = await broker.dispatch_backlog()
    finally:
        await broker.close()
    if backlog is None:
        print("dispatch backlog: no dispatch queue (no fleet has run in this namespace)")
    else:
        print(f"dispatch backlog: {backlog} claim request(s)")
    return 0
