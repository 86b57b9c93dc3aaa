"""Redis restarted under traffic: no two workers write one conversation, nothing lost."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.chaos.harness import assert_epochs_never_go_back, under_traffic
from tests.chaos.servers import PrivateRedis


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    """Every process of this fleet, and the test, use the private Redis."""
    return private_redis.url


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
        await assert_epochs_never_go_back(redis, names, [s.cid for s in traffic.senders])
        await traffic.close()
