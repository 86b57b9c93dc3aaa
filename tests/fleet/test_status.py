"""``fleet status`` against a real fleet: what it shows (text and JSON) is what runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import orjson
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    create_conversation,
    http,
    owned_becomes,
    status_becomes,
    token,
)


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


async def test_the_recent_history_says_who_joined_died_fenced_and_left(
    settings: Settings, redis: Redis, names: Names
) -> None:
    """Read after the fact, as an operator does: a worker killed, another paused past its
    liveness (it fences itself and rejoins) then drained, a gateway killed. Each is said
    once, with the conversations it concerned, in ``fleet status`` and the dashboard's API."""
    async with LocalFleet(settings, FLEET_GATEWAY_LIVENESS_TTL="1") as fleet:
        doomed_gateway, doomed_url = await fleet.gateway()
        _, url = await fleet.gateway()
        doomed, doomed_id = await fleet.worker()
        await fleet.reaper()
        bearer = token(settings, "alice")
        cids = [await create_conversation(url, bearer, "hi") for _ in range(3)]
        watcher = await Client().connect(doomed_url, bearer, cids[0])
        sleeper, sleeper_id = await fleet.worker()

        await doomed.kill()  # its conversations move to the sleeper
        await owned_becomes(redis, names, sleeper_id, set(cids))
        sleeper.signal(signal.SIGSTOP)  # past its TTL: the reaper moves them (to nobody)
        await said(settings, "died", sleeper_id)
        sleeper.signal(signal.SIGCONT)  # it fences itself, rejoins, claims them again
        rejoined_id = str((await sleeper.wait_for("worker_rejoined", timeout=10))["worker_id"])
        await owned_becomes(redis, names, rejoined_id, set(cids))
        _, heir_id = await fleet.worker()
        sleeper.signal(signal.SIGTERM)  # a drain: it hands them to the heir
        assert await sleeper.stop() == 0
        gateways = {g["address"]: g["id"] for g in (await status_json(settings))["gateways"]}
        doomed_gateway_id = gateways[doomed_url.removeprefix("http://")]
        await doomed_gateway.kill()
        await watcher.close()
        await said(settings, "died", doomed_gateway_id)

        status = await status_json(settings)
        text = (await run_fleet(settings, "status")).stdout
        async with http(url, token(settings, "root", admin=True)) as admin:
            overview = (await admin.get("/api/admin/fleet")).json()

    records = [
        (r["happened"], r["role"], r["process_id"], r["conversations"], r["reason"])
        for r in reversed(status["history"])  # oldest first
    ]
    fenced = next(r for r in records if r[0] == "fenced")
    assert records == [
        ("joined", "worker", doomed_id, None, None),
        ("joined", "worker", sleeper_id, None, None),
        ("died", "worker", doomed_id, 3, "liveness lapsed"),
        ("died", "worker", sleeper_id, 3, "liveness lapsed"),  # while it was paused
        ("fenced", "worker", sleeper_id, 3, fenced[4]),
        ("joined", "worker", rejoined_id, None, "rejoined after a fence"),
        ("joined", "worker", heir_id, None, None),
        ("left", "worker", rejoined_id, 3, None),
        ("died", "gateway", doomed_gateway_id, 1, "liveness lapsed"),
    ]
    assert fenced[4] in ("liveness_lapsed", "loop_stalled")
    assert overview["history"] == status["history"]
    assert f"worker {doomed_id} died (liveness lapsed): 3 conversation(s) moved to others" in text
    assert f"worker {rejoined_id} left after a drain: 3 conversation(s) handed over" in text
    gateway_died = "died (liveness lapsed): 1 conversation(s) with clients here"
    assert f"gateway {doomed_gateway_id} {gateway_died}" in text


async def said(settings: Settings, happened: str, process_id: str) -> None:
    """Wait until ``fleet status --json`` has this record."""
    async with asyncio.timeout(10):
        while not any(
            (r["happened"], r["process_id"]) == (happened, process_id)
            for r in (await status_json(settings))["history"]
        ):
            await asyncio.sleep(0.1)
