"""A RabbitMQ cluster node killed (SIGKILL) under traffic, with quorum queues: the node
that leads the conversation queues, and that the gateway is connected to (it declared
them). Processes connected to it move to the next node, the queues elect new leaders
on the others; every acknowledged action is answered once, and none twice."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet
from fleet.rabbitmq_cluster import RabbitCluster
from tests.chaos.harness import under_traffic


def node_port(process: FleetProcess) -> int | None:
    """The AMQP port of the node a fleet process connected to last."""
    said = process.events("amqp_connected")
    return urlsplit(said[-1]["node"]).port if said else None


@pytest.mark.timeout(400)  # the session's cluster may start here; nodes restart
async def test_rabbitmq_nodes_killed_under_traffic(
    quorum_settings: Settings,
    redis: Redis,
    names: Names,
    rabbit_cluster: RabbitCluster,
    chaos_long: bool,
) -> None:
    """Two rounds: the node leading the most conversation queues (the gateway's: it
    declared them), then the node of the worker that owns the conversations."""
    count = 30 if chaos_long else 10
    async with LocalFleet(quorum_settings) as fleet:
        workers, traffic = await under_traffic(fleet, quorum_settings, count, interval=0.2)
        owner = workers[0][0]  # up first, it claimed them all

        queues = await rabbit_cluster.queues()
        leaders = [queues[names.conversation_queue(s.cid)].leader for s in traffic.senders]
        leading = rabbit_cluster.node(max(set(leaders), key=leaders.count))
        resume: list[float] = []
        for round_ in ("leader", "owner"):
            if round_ == "leader":
                victim = leading
            else:
                victim = next(n for n in rabbit_cluster.nodes if n.port == node_port(owner))
            on_it = [p for p in fleet.processes if node_port(p) == victim.port]
            print(
                f"\nkilling {victim.name} ({round_}): connected to it: "
                f"{', '.join(p.name for p in on_it) or 'none'}"
            )
            killed = time.monotonic()
            await victim.kill()
            try:
                # Every conversation answers actions sent after the node died.
                resume += await traffic.resumed(traffic.senders, killed, timeout=60)
                # Those connected to it are connected to another node now.
                async with asyncio.timeout(30):
                    while any(node_port(p) == victim.port for p in on_it):
                        await asyncio.sleep(0.05)
            finally:  # whatever happens, the node is brought back into its cluster
                await victim.start()
            assert victim.name in await rabbit_cluster.running_nodes()

        await traffic.finish("rabbitmq node killed x2", redis, names, tuple(resume))
        await traffic.close()
