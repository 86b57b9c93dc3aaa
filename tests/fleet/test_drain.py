"""``fleet drain``: a remote worker process drains and exits 0, as on SIGTERM; another
worker resumes its conversations."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.fleet.test_status import run_fleet
from tests.support import Client, create_conversation, owned, replied_to, token


async def test_a_drained_worker_releases_its_conversations_and_exits_0(
    settings: Settings, redis: Redis, names: Names
) -> None:
    async with LocalFleet(settings) as fleet:
        _, url = await fleet.gateway()
        drained, drained_id = await fleet.worker()
        bearer = token(settings, "alice")
        cids = [await create_conversation(url, bearer, "hi") for _ in range(3)]
        async with asyncio.timeout(10):
            while len(await owned(redis, names, drained_id)) < 3:
                await asyncio.sleep(0.02)
        heir, heir_id = await fleet.worker()

        result = await run_fleet(settings, "drain", drained_id)

        assert result.returncode == 0, result.stderr
        assert f"asked {drained_id} to drain: it owns 3 conversation(s)" in result.stdout
        assert f"{drained_id} drained and left the fleet" in result.stdout
        assert await drained.wait(10) == 0
        assert len(drained.events("lease_released")) == 3
        assert drained.events("drain_requested")
        async with asyncio.timeout(10):
            while len(await owned(redis, names, heir_id)) < 3:
                await asyncio.sleep(0.02)
        client = await Client().connect(url, bearer, cids[0])
        ack = await client.act("still there?")
        await client.wait_for(replied_to(ack["action_id"]))
        await client.close()
        assert heir.running


async def test_draining_an_unknown_worker_is_one_line(settings: Settings) -> None:
    result = await run_fleet(settings, "drain", "nobody")
    assert result.returncode == 1
    assert result.stderr == (
        f"fleet drain: no live worker nobody in namespace {settings.namespace!r}\n"
    )
