"""The fleet on a Redis Cluster (FLEET_REDIS_CLUSTER=1, three masters with a replica
each): the echo, failover and chaos tests written for one Redis pass unchanged (they
are imported here, and run with this directory's fixtures), and a master killed under
traffic loses nothing acknowledged."""

from __future__ import annotations

import time
from collections import Counter

from redis.asyncio import RedisCluster

from broker.names import Names
from broker.redis import Client
from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet
from tests.chaos.harness import assert_epochs_grow, under_traffic
from tests.chaos.test_recovery import test_a_dead_gateways_connections_are_forgotten
from tests.chaos.test_worker_faults import (
    test_a_paused_worker_is_fenced,
    test_sigkill_a_worker_owning_200_conversations,
)
from tests.cluster.redis_cluster import LocalRedisCluster, until
from tests.e2e.test_failover import test_sigkill_a_worker_under_traffic
from tests.gateway.test_echo_round_trip import (
    test_an_action_sent_before_any_worker_runs_is_answered_once_one_starts,
    test_echo_round_trip,
    test_initial_message_and_replay_after_latest_event_id,
)

__all__ = [
    "test_a_dead_gateways_connections_are_forgotten",
    "test_a_paused_worker_is_fenced",
    "test_an_action_sent_before_any_worker_runs_is_answered_once_one_starts",
    "test_echo_round_trip",
    "test_initial_message_and_replay_after_latest_event_id",
    "test_sigkill_a_worker_owning_200_conversations",
    "test_sigkill_a_worker_under_traffic",
]


async def port_of(redis: Client, key: str) -> int:
    """The port of the master serving ``key``."""
    assert isinstance(redis, RedisCluster)
    await redis.initialize()  # the slots' map, if nothing was asked yet
    node = redis.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def test_a_users_conversations_live_in_its_slot_and_users_spread_over_masters(
    settings: Settings, redis: Client, names: Names
) -> None:
    async with LocalFleet(settings) as fleet:
        _, traffic = await under_traffic(fleet, settings, 12, interval=0.2, users=6)
        serving = Counter([await port_of(redis, names.log(s.cid)) for s in traffic.senders])
        assert len(serving) > 1, f"every conversation on one master: {serving}"
        await traffic.finish("redis cluster: 6 users", redis, names, ())
        await traffic.close()


async def test_a_durable_fleet_checks_every_master(
    settings: Settings, redis_cluster: LocalRedisCluster
) -> None:
    """FLEET_REDIS_DURABLE on a cluster: every master must fsync each write, not one."""
    *durable, _lax = redis_cluster.masters()  # the last one stays lax
    try:
        for node in durable:
            with node.client() as client:
                client.config_set("appendonly", "yes")
                client.config_set("appendfsync", "always")
        async with LocalFleet(settings, FLEET_REDIS_DURABLE="1") as fleet:
            process = FleetProcess("worker", ["worker"], fleet.env)
            fleet.processes.append(await process.start())
            assert await process.wait(30) == 2
    finally:
        for node in durable:
            with node.client() as client:
                client.config_set("appendonly", "no")
    assert any(
        "FLEET_REDIS_DURABLE is set but Redis runs with appendonly 'no'" in line
        for line in process.raw
    ), process.raw


async def test_a_master_killed_under_traffic_loses_nothing_acknowledged(
    settings: Settings, redis: Client, names: Names, redis_cluster: LocalRedisCluster
) -> None:
    """kill -9 of the master serving most conversations: its replica takes over, every
    action acknowledged is answered once, no write lands under a stale epoch."""
    async with LocalFleet(settings, FLEET_AGENT="tests.agents:EpochEcho") as fleet:
        _, traffic = await under_traffic(fleet, settings, 24, interval=0.2, users=8)
        ports = Counter([await port_of(redis, names.log(s.cid)) for s in traffic.senders])
        port, _ = ports.most_common(1)[0]
        victim = next(node for node in redis_cluster.live if node.port == port)
        try:
            victim.kill()
            killed = time.monotonic()
            resume = await traffic.resumed(traffic.senders, killed)
            await traffic.finish("redis cluster: master kill -9", redis, names, resume)
            await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])
            await traffic.close()
        finally:
            # Back as a replica of the master that took over, for the tests after.
            victim.start()
            until(redis_cluster.healthy, 30, "the killed master did not rejoin")
