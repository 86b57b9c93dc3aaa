"""RabbitMQ restarted under traffic: all reconnect; every acknowledged action is answered."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.chaos.harness import under_traffic


async def rabbitmqctl(*args: str, timeout: float = 60) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {output.decode()}"


@pytest.mark.timeout(600)  # never interrupted between stop_app and start_app
async def test_rabbitmq_restart_under_traffic(
    settings: Settings, redis: Redis, names: Names, chaos_long: bool
) -> None:
    count, rounds = (40, 3) if chaos_long else (15, 1)
    await rabbitmqctl("status")  # only stop a broker we can control and start again
    async with LocalFleet(settings) as fleet:
        _, traffic = await under_traffic(fleet, settings, count, interval=0.2)

        resume: list[float] = []
        for _ in range(rounds):
            stopped = time.monotonic()
            try:
                await rabbitmqctl("stop_app")
            finally:  # whatever happens, the broker is left running
                await rabbitmqctl("start_app", timeout=300)
                await rabbitmqctl("await_startup", timeout=300)
            started = time.monotonic()
            print(f"\nbroker down for {started - stopped:.1f}s")
            # Every conversation answers actions sent after the broker came back.
            resume += await traffic.resumed(traffic.senders, started, timeout=90)

        await traffic.finish(f"rabbitmq restart x{rounds}", redis, names, tuple(resume))
        refused = sum(len(s.refused) for s in traffic.senders)
        print(f"{refused} actions refused while the broker was down (not acknowledged, not owed)")
        await traffic.close()
