"""Redis restarted under traffic: no two workers write one conversation, nothing lost."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet, free_port
from tests.chaos.harness import assert_epochs_grow, under_traffic
from tests.chaos.servers import PrivateRedis


@pytest.fixture
async def private_redis(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[PrivateRedis]:
    """A private Redis with its append-only file fsynced every second, or at every write
    (the durable mode) for a test parametrized indirectly with "always"."""
    server = PrivateRedis(free_port(), tmp_path, fsync=getattr(request, "param", "everysec"))
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    """Every process of this fleet, and the test, use the private Redis."""
    return private_redis.url


@pytest.mark.parametrize("private_redis", ["always"], indirect=True)
async def test_a_durable_redis_killed_under_traffic_loses_nothing_acknowledged(
    settings: Settings, redis: Redis, names: Names, private_redis: PrivateRedis, chaos_long: bool
) -> None:
    """kill -9 of the fleet's own Redis (AOF, fsync always), then restart: every action
    acknowledged is answered once, and no write lands under a stale epoch."""
    count, rounds = (40, 3) if chaos_long else (15, 2)
    env = {"FLEET_AGENT": "tests.agents:EpochEcho", "FLEET_REDIS_DURABLE": "1"}
    async with LocalFleet(settings, **env) as fleet:
        _, traffic = await under_traffic(fleet, settings, count, interval=0.2)

        resume: list[float] = []
        for _ in range(rounds):
            await private_redis.restart(hard=True)
            resume += await traffic.resumed(traffic.senders, time.monotonic())

        await traffic.finish(f"redis kill -9 x{rounds} (durable)", redis, names, tuple(resume))
        await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])
        await traffic.close()


async def test_a_fleet_set_durable_refuses_a_redis_that_is_not(
    settings: Settings, private_redis: PrivateRedis
) -> None:
    async with LocalFleet(settings, FLEET_REDIS_DURABLE="1") as fleet:
        process = FleetProcess("worker", ["worker"], fleet.env)
        fleet.processes.append(await process.start())
        assert await process.wait(30) == 2
    assert any(
        "FLEET_REDIS_DURABLE is set but Redis runs with appendonly 'yes' and appendfsync "
        "'everysec'" in line
        for line in process.raw
    ), process.raw


async def test_redis_restart_under_traffic(
    settings: Settings, redis: Redis, names: Names, private_redis: PrivateRedis, chaos_long: bool
) -> None:
    count, rounds = (40, 3) if chaos_long else (15, 1)
    async with LocalFleet(settings, FLEET_AGENT="tests.agents:EpochEcho") as fleet:
        _, traffic = await under_traffic(fleet, settings, count, interval=0.2)

        resume: list[float] = []
        for _ in range(rounds):
            await private_redis.restart()
            # Every conversation answers actions sent after Redis came back.
            resume += await traffic.resumed(traffic.senders, time.monotonic())

        await traffic.finish(f"redis restart x{rounds}", redis, names, tuple(resume))
        await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])
        await traffic.close()
