"""A worker cut off from Redis (no restart, no reset) fences itself before others take over."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.chaos.harness import Traffic, assert_epochs_grow
from tests.chaos.servers import Proxy
from tests.support import token


async def test_a_worker_cut_off_from_redis_fences_itself_first(
    settings: Settings, redis: Redis, names: Names
) -> None:
    proxy = Proxy(6379)
    proxy_port = await proxy.start()
    port = free_port()
    try:
        async with LocalFleet(settings, FLEET_AGENT="tests.agents:EpochEcho") as fleet:
            await fleet.gateway(port)
            await fleet.reaper()
            victim, victim_id = await fleet.worker(
                FLEET_REDIS_URL=f"redis://127.0.0.1:{proxy_port}/0"
            )
            traffic = await Traffic.open(f"http://127.0.0.1:{port}", [token(settings, "a")], 10)
            await fleet.worker()
            traffic.start(interval=0.2)
            await traffic.warm_up()

            proxy.cut()
            cut = time.monotonic()
            lapsed = await wall_clock_when_gone(redis, names.alive("worker", victim_id, 0))
            fenced = await victim.wait_for("worker_fenced")
            fenced_at = datetime.fromisoformat(fenced["timestamp"]).timestamp()
            print(f"\nfenced {lapsed - fenced_at:.3f}s before its liveness key expired")
            assert fenced["worker_id"] == victim_id
            assert fenced_at < lapsed

            resume = await traffic.resumed(traffic.senders, cut)
            proxy.heal()
            await victim.wait_for("worker_rejoined")
            await traffic.finish("worker cut off from redis", redis, names, resume)
            assert await assert_epochs_grow(redis, names, [s.cid for s in traffic.senders])
            await traffic.close()
            victim.signal(signal.SIGTERM)
    finally:
        await proxy.close()


async def wall_clock_when_gone(redis: Redis, key: str) -> float:
    """Poll (every 5 ms, with a deadline) until ``key`` is gone; the wall-clock time."""
    async with asyncio.timeout(10):
        while await redis.exists(key):
            await asyncio.sleep(0.005)
    return time.time()
