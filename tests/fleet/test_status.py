"""``fleet status`` against a real fleet: what it shows (text and JSON) is what runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import orjson
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, status_becomes, token


def fleet_env(settings: Settings) -> dict[str, str]:
    """The environment of an operator's shell for the fleet of ``settings``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return {**clean, **settings.to_env(), "FLEET_DEPENDENCY_TIMEOUT": "3"}


def fleet_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m fleet ARGS`` for the fleet of ``settings``, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env=fleet_env(settings),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def run_fleet(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(fleet_command, settings, *args)


async def status_json(settings: Settings) -> dict[str, Any]:
    result = await run_fleet(settings, "status", "--json")
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = orjson.loads(result.stdout)
    return found


async def test_status_shows_every_process_and_conversation(
    settings: Settings, fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    gateway = await fleet.start_gateway()
    worker = await fleet.start_worker(worker_capacity=7)
    reaper = await fleet.start_reaper()
    await fleet.start_reaper()
    bearer = token(settings, "alice")
    running = [await create_conversation(fleet.url, bearer, "hi") for _ in range(2)]
    closed = await create_conversation(fleet.url, bearer, "bye")
    client = await Client().connect(fleet.url, bearer, running[0])
    await status_becomes(redis, names, running[1], "running")
    await status_becomes(redis, names, closed, "running")
    await gateway.sockets._operations.close("alice", closed)
    await status_becomes(redis, names, closed, "closed")
    async with asyncio.timeout(10):
        while not reaper.leading:
            await asyncio.sleep(0.02)

    status = await status_json(settings)
    [gw] = status["gateways"]
    assert gw["id"] == gateway.gateway_id and gw["alive"] and gw["connections"] == 1
    assert gw["address"] == f"127.0.0.1:{settings.port}" and gw["pid"] == os.getpid()
    [w] = status["workers"]
    assert (w["id"], w["owned"], w["capacity"], w["incarnation"]) == (worker.worker_id, 2, 7, 0)
    assert w["alive"]
    assert status["leader"] == reaper.reaper_id
    assert sorted((r["id"], r["leader"]) for r in status["reapers"]) == sorted(
        [(reaper.reaper_id, True), (fleet_reaper_ids(status, reaper.reaper_id), False)]
    )
    assert status["conversations"] == {"running": 2, "idle": 0, "closing": 0, "closed": 1}
    assert status["dispatch_backlog"] == 0
    assert status["dead_letters"] == 0

    text = (await run_fleet(settings, "status")).stdout
    assert f"{worker.worker_id}  0            2      7         28.6%        alive" in text
    assert f"reapers: 2 (leader: {reaper.reaper_id})" in text
    assert "conversations: 2 running, 0 idle, 0 closing, 1 closed" in text
    assert "dispatch backlog: 0 claim request(s)" in text
    assert "dead letters: 0" in text
    await client.close()


async def workers_by_id(settings: Settings) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in (await status_json(settings))["workers"]}


def fleet_reaper_ids(status: dict[str, Any], leader: str) -> str:
    """The id of the reaper that does not lead."""
    [other] = [r["id"] for r in status["reapers"] if r["id"] != leader]
    return str(other)


async def test_a_killed_worker_shows_dead_until_reaped_and_watch_repeats(
    settings: Settings,
) -> None:
    async with LocalFleet(settings) as fleet:
        doomed, doomed_id = await fleet.worker()
        _, alive_id = await fleet.worker()
        await doomed.kill()
        async with asyncio.timeout(10):  # its liveness key outlives it by up to a TTL
            while (by_id := await workers_by_id(settings))[doomed_id]["alive"]:
                await asyncio.sleep(0.1)
        assert by_id[alive_id]["alive"] and by_id[alive_id]["dead_for_s"] is None
        assert by_id[doomed_id]["dead_for_s"] >= 0
        status = await status_json(settings)
        assert status["reapers"] == [] and status["leader"] is None
        await fleet.reaper()
        async with asyncio.timeout(10):
            while doomed_id in {w["id"] for w in (await status_json(settings))["workers"]}:
                await asyncio.sleep(0.1)
        watching = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "fleet", "status", "--watch", "--interval", "0.2", "--json"],
            env=fleet.env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert watching.stdout is not None
        first = orjson.loads(await watching.stdout.readline())
        second = orjson.loads(await watching.stdout.readline())
        watching.terminate()
        await watching.wait()
        assert [w["id"] for w in first["workers"]] == [alive_id]
        assert second["at"] > first["at"]
