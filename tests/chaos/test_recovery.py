"""Recovery does not hinge on one reaper: a standby takes over, and gateways recover lazily."""

from __future__ import annotations

import asyncio
import signal
import time

from redis.asyncio import Redis

from broker.names import Names
from broker.redis import text
from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet, free_port
from tests.chaos.harness import Traffic
from tests.support import Client, create_conversation, owned, replied_to, say, token

LEASE_TTL = 1.0
# Long enough to queue input for its conversations after pausing it, and still be alive.
VICTIM_TTL = 3.0


async def test_a_standby_reaper_takes_over_within_its_lease(
    settings: Settings, redis: Redis, names: Names
) -> None:
    async with LocalFleet(settings, FLEET_REAPER_LEASE_TTL=str(LEASE_TTL)) as fleet:
        reapers = [await fleet.reaper(), await fleet.reaper()]
        first = await asyncio.wait_for(leader_of(redis, names, reapers), 10)
        standby = next(r for r in reapers if r is not first)
        assert standby.lines[-1]["event"] != "reaper_leading"

        first.signal(signal.SIGKILL)
        killed = time.monotonic()
        await standby.wait_for("reaper_leading")
        took_over = time.monotonic() - killed
        print(f"\nstandby reaper leads {took_over:.3f}s after the leader was killed")
        assert took_over < LEASE_TTL + 2

        # The new leader does the job, with no client traffic to recover anything lazily:
        # a dead worker's conversations get new owners, under greater epochs, and the
        # actions queued for them before it died are answered.
        victim, victim_id = await fleet.worker(FLEET_LIVENESS_TTL=str(VICTIM_TTL))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        await fleet.gateway(port)
        bearer = token(settings, "a")
        cids = [await create_conversation(url, bearer) for _ in range(3)]
        listeners = [await Client().connect(url, bearer, cid) for cid in cids]  # listen only
        async with asyncio.timeout(10):
            while len(await owned(redis, names, victim_id)) < len(cids):
                await asyncio.sleep(0.02)
        epochs = {cid: int(await redis.get(names.epoch(cid)) or 0) for cid in cids}
        _, heir_id = await fleet.worker()

        victim.signal(signal.SIGSTOP)  # it takes nothing from its queues any more
        for cid in cids:  # admitted while its owner's liveness holds: nobody is asked to claim
            await say(url, bearer, cid, "queued", action_id=f"queued-{cid[:8]}")
        victim.signal(signal.SIGKILL)
        reaped = await standby.wait_for("worker_reaped")
        assert (reaped["worker_id"], reaped["conversations"]) == (victim_id, len(cids))

        for cid, client in zip(cids, listeners, strict=True):
            await client.wait_for(replied_to(f"queued-{cid[:8]}"), timeout=20)
            lease = text(await redis.get(names.lease(cid)) or b"")
            assert lease.rsplit(":", 1)[0] == heir_id, f"{cid}: lease {lease!r}"
            assert int(await redis.get(names.epoch(cid)) or 0) > epochs[cid]
            await client.close()


async def leader_of(redis: Redis, names: Names, reapers: list[FleetProcess]) -> FleetProcess:
    """The reaper that logged leadership and holds the leader key."""
    while True:
        holder = await redis.get(names.reaper_leader)
        for reaper in reapers:
            started = next(ln for ln in reaper.lines if ln["event"] == "reaper_started")
            if holder and text(holder) == started["reaper_id"]:
                await reaper.wait_for("reaper_leading")
                return reaper
        await asyncio.sleep(0.05)


async def test_gateways_recover_conversations_with_no_reaper_at_all(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port = free_port()
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        victim, victim_id = await fleet.worker()
        traffic = await Traffic.open(f"http://127.0.0.1:{port}", [token(settings, "a")], 10)
        await fleet.worker()
        traffic.start(interval=0.2)
        await traffic.warm_up()
        assert len(await owned(redis, names, victim_id)) == 10

        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        resume = await traffic.resumed(traffic.senders, killed)
        await traffic.finish("sigkill, no reaper", redis, names, resume)
        await traffic.close()


async def test_a_dead_gateways_connections_are_forgotten(
    settings: Settings, redis: Redis, names: Names
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, FLEET_GATEWAY_LIVENESS_TTL="1.0") as fleet:
        gateway, _ = await fleet.gateway(port)
        await fleet.reaper()
        bearer = token(settings, "a")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        assert list((await redis.hgetall(names.clients(cid))).values()) == [b"1"]

        gateway.signal(signal.SIGKILL)
        killed = time.monotonic()
        async with asyncio.timeout(10):
            while await redis.hlen(names.clients(cid)):
                await asyncio.sleep(0.02)
        forgotten = time.monotonic() - killed
        print(f"\na dead gateway's connections were forgotten {forgotten:.3f}s after SIGKILL")
        assert forgotten < 1.0 + 1
        await client.close()
