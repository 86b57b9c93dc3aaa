"""Webhooks when workers die: a worker SIGKILLed under traffic, and workers killed
right after logging a state change, before it could be queued; no webhook is lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pydantic import SecretStr
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.chaos.harness import under_traffic
from tests.receiver import SECRET, Receivers, everything_delivered, logged_states
from tests.support import Client, create_conversation, replied_to, replies, token


def with_webhooks(settings: Settings, url: str) -> Settings:
    return settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET), "webhook_url": url, "webhook_retry_cap": 0.5}
    )


async def test_a_worker_killed_under_traffic_loses_no_webhook(
    receivers: Receivers, settings: Settings, redis: Redis, names: Names
) -> None:
    receiver = await receivers()
    async with LocalFleet(with_webhooks(settings, receiver.url)) as fleet:
        workers, traffic = await under_traffic(fleet, settings, 10, interval=0.2)
        victim, victim_id = workers[0]
        assert await redis.scard(names.owns(victim_id)) == 10  # owns them all

        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        resume = await traffic.resumed(traffic.senders, killed)
        await traffic.finish("webhooks: sigkill", redis, names, resume)
        await everything_delivered(
            receiver, redis, names, [s.cid for s in traffic.senders], timeout=30
        )
        assert await victim.wait(5) == -signal.SIGKILL
        await traffic.close()


async def test_a_state_change_logged_by_a_worker_that_died_before_queueing_it_is_delivered(
    receivers: Receivers, settings: Settings, redis: Redis, names: Names, tmp_path: Path
) -> None:
    receiver = await receivers()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # CrashingEcho kills its worker as soon as "running" is logged (crash-before-reply),
    # or "awaiting_user_input" (crash-after-reply): the relay has had no chance to
    # queue it (it was only woken), so only the next owner can.
    agent = {"FLEET_AGENT": "tests.agents:CrashingEcho", "CRASH_MARKERS": str(tmp_path)}
    async with LocalFleet(with_webhooks(settings, receiver.url), **agent) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        workers = [await fleet.worker()]
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        workers += [await fleet.worker(), await fleet.worker()]

        for action_id in ("crash-before-reply", "crash-after-reply", "after"):
            assert (await client.act(action_id, action_id=action_id))["ok"]
            await client.wait_for(replied_to(action_id), timeout=20)

        assert sorted(os.listdir(tmp_path)) == ["crash-after-reply", "crash-before-reply"]
        codes = [process.process.returncode for process, _ in workers]
        assert codes.count(-signal.SIGKILL) == 2
        assert {a: len(r) for a, r in replies(client.events).items()} == {
            "crash-before-reply": 1,
            "crash-after-reply": 1,
            "after": 1,
        }
        assert len(await logged_states(redis, names, cid)) == 6
        await everything_delivered(receiver, redis, names, [cid], timeout=20)
        await client.close()
