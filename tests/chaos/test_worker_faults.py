"""Workers killed, paused, drained and crashed under traffic: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from redis.asyncio import Redis

from broker.names import Names
from broker.redis import text
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.chaos.harness import assert_epochs_never_go_back, under_traffic
from tests.support import Client, create_conversation, replied_to, replies, token

EPOCH_AGENT = {"FLEET_AGENT": "tests.agents:EpochEcho"}


async def test_sigkill_a_worker_owning_200_conversations(
    settings: Settings, redis: Redis, names: Names, chaos_long: bool
) -> None:
    count = 500 if chaos_long else 200
    async with LocalFleet(settings, **EPOCH_AGENT) as fleet:
        workers, traffic = await under_traffic(fleet, settings, count, interval=1.0)
        victim, victim_id = workers[0]
        assert await redis.scard(names.owns(victim_id)) == count

        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        resume = await traffic.resumed(traffic.senders, killed)
        print(f"\n{count} conversations resumed; last {max(resume):.3f}s after SIGKILL")
        await traffic.finish(f"sigkill {count}", redis, names, resume)
        await assert_epochs_never_go_back(redis, names, [s.cid for s in traffic.senders])
        await traffic.close()


async def test_a_paused_worker_is_fenced(
    settings: Settings, redis: Redis, names: Names, chaos_long: bool
) -> None:
    count = 60 if chaos_long else 20
    async with LocalFleet(settings, **EPOCH_AGENT) as fleet:
        workers, traffic = await under_traffic(fleet, settings, count, interval=0.2)
        victim, victim_id = workers[0]

        victim.signal(signal.SIGSTOP)
        paused = time.monotonic()
        resume = await traffic.resumed(traffic.senders, paused)
        # Everything moved while it slept; let it run again under traffic.
        assert await redis.scard(names.owns(victim_id)) == 0
        victim.signal(signal.SIGCONT)
        fenced = await victim.wait_for("worker_fenced")
        assert fenced["worker_id"] == victim_id
        await traffic.warm_up(replies_each=len(replies(traffic.senders[0].client.events)) + 2)

        await traffic.finish("sigstop > ttl", redis, names, resume)
        await assert_epochs_never_go_back(redis, names, [s.cid for s in traffic.senders])
        await traffic.close()


async def test_rolling_restart_of_every_worker(
    settings: Settings, redis: Redis, names: Names, chaos_long: bool
) -> None:
    count, rounds = (60, 3) if chaos_long else (20, 1)
    async with LocalFleet(settings, **EPOCH_AGENT) as fleet:
        workers, traffic = await under_traffic(fleet, settings, count, interval=0.2)

        pauses: list[float] = []
        for _ in range(rounds):
            for i, (process, worker_id) in enumerate(list(workers)):
                moving = {text(c) for c in await redis.smembers(names.owns(worker_id))}
                process.signal(signal.SIGTERM)
                drained = time.monotonic()
                assert await process.stop() == 0
                senders = [s for s in traffic.senders if s.cid in moving]
                pauses += await traffic.resumed(senders, drained)
                workers[i] = await fleet.worker()

        await traffic.finish(f"rolling restart x{rounds}", redis, names, tuple(pauses))
        await assert_epochs_never_go_back(redis, names, [s.cid for s in traffic.senders])
        await traffic.close()


async def test_a_crash_between_logging_and_acking_logs_once(
    settings: Settings, redis: Redis, names: Names, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = {"FLEET_AGENT": "tests.agents:CrashingEcho", "CRASH_MARKERS": str(tmp_path)}
    async with LocalFleet(settings, **agent) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        workers = [await fleet.worker()]
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        # Each crash takes one worker with it; the third answers the last action.
        workers += [await fleet.worker(), await fleet.worker()]

        for action_id in ("crash-before-reply", "crash-after-reply"):
            assert (await client.act(action_id, action_id=action_id))["ok"]
            await client.wait_for(replied_to(action_id), timeout=20)
        assert (await client.act("after", action_id="after"))["ok"]
        events = await client.wait_for(lambda ev: "after" in replies(ev))

        assert sorted(os.listdir(tmp_path)) == ["crash-after-reply", "crash-before-reply"]
        logged = await redis.lrange(names.log(cid), 0, -1)
        assert [e["id"] for e in events] == list(range(len(logged))) == list(range(12))
        users = [e["data"]["action_id"] for e in events if e["source"] == "user"]
        assert users == ["crash-before-reply", "crash-after-reply", "after"]
        assert {a: len(r) for a, r in replies(events).items()} == dict.fromkeys(users, 1)
        codes = [process.process.returncode for process, _ in workers]
        assert codes.count(-signal.SIGKILL) == 2 and codes[0] == -signal.SIGKILL
        await client.close()
