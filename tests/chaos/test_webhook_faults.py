"""Webhooks when workers die or lose the broker: a worker SIGKILLed under traffic,
workers killed right after logging a state change (before it could be queued), and a
worker whose broker connection is cut while it holds deliveries; no webhook is lost."""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.conftest import InProcessFleet
from tests.receiver import SECRET, Receivers, everything_delivered, logged_states
from tests.support import Client, create_conversation, owned, replied_to, replies, token


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
        assert len(await owned(redis, names, victim_id)) == 10  # owns them all

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


def own_tcp_ports() -> set[int]:
    """Local ports of this process's TCP sockets (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def cut_amqp_connections(name: str) -> int:
    """Have RabbitMQ close this process's connections called ``name`` (a real fault,
    for this process only); how many it closed."""
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        "list_connections",
        "pid",
        "peer_port",
        "client_properties",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await listing.communicate()
    ports = own_tcp_ports()
    doomed = [
        line.split("\t")[0]
        for line in out.decode().splitlines()
        if f'{{"connection_name","{name}"}}' in line and int(line.split("\t")[1]) in ports
    ]
    for pid in doomed:
        closing = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-q",
            "close_connection",
            pid,
            "test: cut",
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await closing.wait() == 0
    return len(doomed)


async def test_deliveries_held_when_the_broker_cuts_the_worker_off_are_delivered_once_back(
    receivers: Receivers, fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    receiver = await receivers(status=503)  # failing: lanes hold their deliveries, unacked
    fleet.settings = with_webhooks(settings, receiver.url)
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    cids = [await create_conversation(fleet.url, bearer, initial=f"m{i}") for i in range(3)]
    await receiver.wait_for(lambda _: len(receiver.requests) >= 6, timeout=10)

    reconnected = asyncio.Event()
    worker.broker.on_reconnect(reconnected.set)
    assert await cut_amqp_connections("worker") == 1
    async with asyncio.timeout(20):
        await reconnected.wait()
    receiver.status = 200
    await everything_delivered(receiver, redis, names, cids, timeout=20)
    # Nothing is left held or waiting.
    async with asyncio.timeout(10):
        while (await worker.broker.webhook_backlog())[0] != 0:
            await asyncio.sleep(0.1)
