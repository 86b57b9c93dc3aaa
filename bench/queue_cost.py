"""What a conversation queue costs, classic beside quorum, on a local 3-node RabbitMQ
cluster: ``python -m bench.queue_cost [--queues N]``.

It starts its own cluster (``fleet.rabbitmq_cluster``: three nodes of the installed
server on free ports, in a temporary directory; deleted at the end), then for each
queue type declares N conversation queues through the fleet's own ``Broker`` (durable,
single active consumer, over a pool of channels as a gateway does; a quorum queue gets
a replica on every node), and reports:

- declares/s and deletes/s (a conversation's queue is declared when it is created or
  resumed and deleted when it is passivated);
- broker memory per queue, empty and with one input waiting in it: the growth of the
  Erlang VMs' own count (``erlang:memory(total)`` after a garbage collection), summed
  over the three nodes, divided by N. The classic queues live on the node the
  ``Broker`` connected to (one copy); the quorum queues on all three.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from broker.amqp import Broker
from broker.events import Action
from broker.names import Names
from broker.settings import QueueType
from fleet.rabbitmq_cluster import RabbitCluster

CHANNELS = 8  # a gateway's declaring channels
GC = "[erlang:garbage_collect(P) || P <- erlang:processes()], erlang:memory(total)."


@dataclass(frozen=True, slots=True)
class Cost:
    queue_type: QueueType
    queues: int
    declares_per_s: float
    deletes_per_s: float
    empty_bytes: float  # broker memory per queue, all nodes together
    one_input_bytes: float  # the same with one input waiting in each queue


async def cluster_memory(cluster: RabbitCluster) -> int:
    """The bytes the cluster's Erlang VMs use, each after a full garbage collection."""
    totals = await asyncio.gather(*(node.ctl("eval", GC) for node in cluster.nodes))
    return sum(int(total.strip().rstrip(".")) for total in totals)


async def measure(cluster: RabbitCluster, queue_type: QueueType, count: int) -> Cost:
    names = Names(f"bench-queues-{queue_type}")
    broker = Broker(cluster.url, names, "bench", channels=CHANNELS, queue_type=queue_type)
    await broker.connect(declare=False)
    cids = [uuid.uuid4().hex for _ in range(count)]
    try:
        before = await cluster_memory(cluster)
        started = time.monotonic()
        await in_parallel(broker.declare_conversation, cids)
        declares = count / (time.monotonic() - started)
        empty = await cluster_memory(cluster)

        async def one_input(cid: str) -> None:
            await broker.publish_input(cid, Action(f"{cid}-1", "message", "x" * 100))

        await in_parallel(one_input, cids)
        loaded = await cluster_memory(cluster)

        started = time.monotonic()
        await broker.delete([names.conversation_queue(cid) for cid in cids])
        deletes = count / (time.monotonic() - started)
    finally:
        await broker.delete([names.conversation_queue(cid) for cid in cids])
        await broker.close()
    return Cost(
        queue_type, count, declares, deletes, (empty - before) / count, (loaded - before) / count
    )


async def in_parallel(step: Callable[[str], Awaitable[object]], cids: list[str]) -> None:
    """``step(cid)`` for every conversation, a few per channel at a time."""
    limit = asyncio.Semaphore(CHANNELS * 4)

    async def one(cid: str) -> None:
        async with limit:
            await step(cid)

    await asyncio.gather(*(one(cid) for cid in cids))


def table(costs: list[Cost]) -> str:
    lines = [
        f"{'queue type':<12}{'queues':>8}{'declares/s':>12}{'deletes/s':>11}"
        f"{'KiB/queue empty':>17}{'KiB/queue 1 input':>19}"
    ]
    for c in costs:
        lines.append(
            f"{c.queue_type:<12}{c.queues:>8}{c.declares_per_s:>12.0f}{c.deletes_per_s:>11.0f}"
            f"{c.empty_bytes / 1024:>17.1f}{c.one_input_bytes / 1024:>19.1f}"
        )
    return "\n".join(lines)


async def main(count: int) -> None:
    started = time.monotonic()
    async with RabbitCluster(3) as cluster:
        print(f"3-node cluster up in {time.monotonic() - started:.0f}s: {cluster.url}")
        costs = [await measure(cluster, kind, count) for kind in ("classic", "quorum")]
    print(table(costs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=500, help="per queue type (default 500)")
    asyncio.run(main(parser.parse_args().queues))
