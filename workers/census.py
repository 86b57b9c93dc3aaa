"""The fleet as a whole, counted from its indexes (never by a scan) for the leading
reaper to export: live processes by role, conversations by status and owed an owner,
the dispatch backlog, dead letters."""

from __future__ import annotations

from typing import cast, get_args

from broker.amqp import Broker
from broker.metrics import Figures
from broker.names import Names, Role
from broker.overview import count_by_status
from broker.redis import Client, text

ROLES: tuple[Role, ...] = get_args(Role)


async def count(redis: Client, names: Names, broker: Broker) -> Figures:
    """A few Redis round trips and a passive check of the dispatch and dead-letter queues."""
    n = names
    live: dict[str, int] = {}
    running = 0
    for role in ROLES:
        # Every process has a deadline and liveness in group 0 (and a copy in each other).
        ids = [
            text(raw) for raw in cast(list[bytes], await redis.zrange(n.deadlines(role, 0), 0, -1))
        ]
        async with redis.pipeline(transaction=False) as pipe:
            for process_id in ids:
                pipe.exists(n.alive(role, process_id, 0))
            for process_id in ids if role == "worker" else []:
                for group in n.all_groups:
                    pipe.scard(n.owns(process_id, group))
            replies = await pipe.execute()
        live[role] = sum(replies[: len(ids)])
        if role == "worker":
            running = sum(replies[len(ids) :])
    counts = await count_by_status(redis, n)
    dead = [await broker.passive_depth(queue) for queue in n.dead_letter_queues]
    return Figures(
        live=live,
        conversations={
            "running": running,
            **{status: counts[status] for status in ("idle", "closing", "closed")},
        },
        awaiting_owner=counts["pending"],
        dispatch_backlog=await broker.dispatch_backlog() or 0,
        dead_letters=sum(depth or 0 for depth in dead),
    )
