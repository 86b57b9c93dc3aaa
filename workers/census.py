"""The fleet as a whole, counted from its indexes (never by a scan) for the leading
reaper to export: live processes by role, conversations by status and owed an owner,
the dispatch backlog, dead letters."""

from __future__ import annotations

from typing import cast, get_args

from redis.asyncio import Redis

from broker.amqp import Broker
from broker.metrics import Figures
from broker.names import Names, Role
from broker.redis import text

ROLES: tuple[Role, ...] = get_args(Role)


async def count(redis: Redis, names: Names, broker: Broker) -> Figures:
    """A few Redis round trips and a passive check of the dispatch and dead-letter queues."""
    n = names
    live: dict[str, int] = {}
    running = 0
    for role in ROLES:
        ids = cast(list[bytes], await redis.zrange(n.deadlines(role), 0, -1))
        async with redis.pipeline(transaction=False) as pipe:
            for raw in ids:
                pipe.exists(n.alive(role, text(raw)))
                if role == "worker":
                    pipe.scard(n.owns(text(raw)))
            replies = await pipe.execute()
        if role == "worker":
            live[role], running = sum(replies[0::2]), sum(replies[1::2])
        else:
            live[role] = sum(replies)
    async with redis.pipeline(transaction=False) as pipe:
        for status in ("idle", "closing", "closed"):
            pipe.zcard(n.by_status(status))
        pipe.zcard(n.pending)
        idle, closing, closed, pending = await pipe.execute()
    dead = [await broker.passive_depth(queue) for queue in n.dead_letter_queues]
    return Figures(
        live=live,
        conversations={"running": running, "idle": idle, "closing": closing, "closed": closed},
        awaiting_owner=pending,
        dispatch_backlog=await broker.dispatch_backlog() or 0,
        dead_letters=sum(depth or 0 for depth in dead),
    )
