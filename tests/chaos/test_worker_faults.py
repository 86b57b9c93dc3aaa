"""Workers killed, paused, drained and crashed under traffic: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, LogLine, free_port, log_time
from tests.chaos.harness import assert_epochs_grow, under_traffic
from tests.support import Client, create_conversation, owned, replied_to, replies, token

EPOCH_AGENT = {"FLEET_AGENT": "tests.agents:EpochEcho"}
TURN_SECONDS = 0.5


async def test_sigkill_a_worker_owning_200_conversations(
    settings: Settings, redis: Redis, names: Names, chaos_long: bool
) -> None:
    count = 500 if chaos_long else 200
    # Each turn takes a while, so that the kill lands mid-turn for many conversations.
    async with LocalFleet(settings, **EPOCH_AGENT, TURN_SECONDS=str(TURN_SECONDS)) as fleet:
        workers, traffic = await under_traffic(fleet, settings, count, interval=1.0)
        victim = workers[0][0]
        heir = workers[1][0]
        # It claimed them all; on a loaded machine it may have given a few back since, or
        # fenced itself and come back as a new incarnation (a new id) that claimed again.
        joined = [ln for ln in victim.lines if ln["event"] in ("worker_started", "worker_rejoined")]
        held = await owned(redis, names, joined[-1]["worker_id"])
        assert len(held) >= count * 3 // 4
        # Senders start together and stay in step: wait for a moment when a good share
        # of its conversations are mid-turn, and kill it then.
        async with asyncio.timeout(30):
            while len(await unfinished_turns(redis, names, sorted(held))) < len(held) // 4:
                await asyncio.sleep(0.01)

        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        # Read at once: nobody owns them until the victim's liveness lapses.
        mid_turn = await unfinished_turns(redis, names, sorted(held))
        print(f"\n{len(mid_turn)} of {len(held)} conversations were mid-turn at the SIGKILL")
        assert len(mid_turn) >= len(held) // 10, f"only {len(mid_turn)} were mid-turn"
        resume = await traffic.resumed(traffic.senders, killed)
        print(f"{count} conversations resumed; last {max(resume):.3f}s after SIGKILL")
        for cid in mid_turn:  # cut short, resumed by the next owner
            await heir.wait_for("turn_resumed", of_conversation(cid))
        await traffic.finish(f"sigkill {count}", redis, names, resume)
        assert await assert_epochs_grow(redis, names, sorted(held)) >= len(held)
        await traffic.close()


def of_conversation(cid: str) -> Callable[[LogLine], bool]:
    return lambda line: line.get("conversation_id") == cid


async def unfinished_turns(redis: Redis, names: Names, cids: list[str]) -> list[str]:
    """The conversations whose log holds a turn not finished yet (``turn_from``)."""
    async with redis.pipeline(transaction=False) as pipe:
        for cid in cids:
            pipe.hget(names.meta(cid), "turn_from")
        marks = await pipe.execute()
    return [cid for cid, mark in zip(cids, marks, strict=True) if mark is not None]


async def test_a_paused_worker_is_fenced(
    settings: Settings, redis: Redis, names: Names, chaos_long: bool
) -> None:
    """Paused (SIGSTOP) past its liveness TTL with nothing in hand, so that only its
    heartbeat can find out: it fences itself as soon as it runs again."""
    count = 60 if chaos_long else 20
    async with LocalFleet(settings, **EPOCH_AGENT) as fleet:
        workers, traffic = await under_traffic(fleet, settings, count, interval=0.2)
        victim, victim_id = workers[0]
        await traffic.pause()

        victim.signal(signal.SIGSTOP)
        paused = time.monotonic()
        # Its conversations move while it sleeps: the reaper re-dispatches them.
        async with asyncio.timeout(10):
            while len(await owned(redis, names, victim_id)):
                await asyncio.sleep(0.02)
        victim.signal(signal.SIGCONT)
        woke = time.time()
        fenced = await victim.wait_for("worker_fenced", timeout=10)
        assert fenced["worker_id"] == victim_id
        # The heartbeat's verdict (its key lapsed, or its loop stood still), not a turn's
        # refused write, and at once: within a TTL of waking.
        assert fenced["reason"] in ("liveness_lapsed", "loop_stalled"), fenced
        assert log_time(fenced) - woke < settings.liveness_ttl, fenced
        await victim.wait_for("worker_rejoined", timeout=10)

        traffic.start(interval=0.2)
        resume = await traffic.resumed(traffic.senders, paused)
        await traffic.warm_up(replies_each=len(replies(traffic.senders[0].client.events)) + 2)
        await traffic.finish("sigstop > ttl", redis, names, resume)
        assert await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])
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
                moving = await owned(redis, names, worker_id)
                process.signal(signal.SIGTERM)
                drained = time.monotonic()
                assert await process.stop() == 0
                senders = [s for s in traffic.senders if s.cid in moving]
                pauses += await traffic.resumed(senders, drained)
                workers[i] = await fleet.worker()

        await traffic.finish(f"rolling restart x{rounds}", redis, names, tuple(pauses))
        assert await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])
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


async def test_a_worker_killed_between_logging_and_publishing(
    settings: Settings, redis: Redis, names: Names, tmp_path: Path
) -> None:
    """Its last answer is in the log, never published: the client gets it all the same,
    in order, from the next owner, which publishes its predecessor's last events again
    as it takes over (no need to wait for the conversation's next event)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = {"FLEET_AGENT": "tests.agents:DiesBeforePublishing", "CRASH_MARKERS": str(tmp_path)}
    async with LocalFleet(settings, **agent) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        victim, _ = await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        await fleet.worker()
        assert (await client.act("before", action_id="before"))["ok"]
        await client.wait_for(replied_to("before"))

        assert (await client.act("die-before-publish", action_id="die"))["ok"]
        assert await victim.wait(timeout=20) == -signal.SIGKILL
        logged = [orjson.loads(raw) for raw in await redis.lrange(names.log(cid), 0, -1)]
        assert "die" in replies(logged)  # logged, then the worker died
        assert "die" not in replies(client.events)  # and never published
        await client.wait_for(replied_to("die"), timeout=20)  # until the next owner came

        assert (await client.act("after", action_id="after"))["ok"]
        events = await client.wait_for(replied_to("after"), timeout=20)
        ids = [e["id"] for e in events]
        assert ids == list(range(len(ids))), f"the client missed logged events: ids {ids}"
        assert {a: len(r) for a, r in replies(events).items()} == dict.fromkeys(
            ["before", "die", "after"], 1
        )
        await client.close()
