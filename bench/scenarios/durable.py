"""Durable mode: the latency and throughput runs again, against a Redis that fsyncs
every write to its append-only file before it answers (``appendonly yes``,
``appendfsync always``, what ``FLEET_REDIS_DURABLE=1`` requires), beside this run's
figures on the shared Redis (which persists nothing): what durability costs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.context import Context
from bench.polling import until
from bench.progress import say
from bench.results import Figure, Result, ms, stat
from bench.scenarios import latency, throughput
from bench.scenarios.latency import Latencies
from bench.scenarios.throughput import Load
from fleet.harness import free_port

BASELINE = "same figure, this run, Redis without persistence"


@contextlib.asynccontextmanager
async def fsyncing_redis(workdir: Path) -> AsyncIterator[str]:
    """A private ``redis-server`` that fsyncs every write; its URL."""
    port = free_port()
    directory = workdir / "redis-durable"
    directory.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    try:
        await until(lambda: _answers(client), interval=0.05, timeout=10)
        yield url
    finally:
        await client.aclose()
        process.terminate()
        await process.wait()


async def _answers(client: Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False


async def run(ctx: Context, baseline: list[Result]) -> Result:
    """Measure latency and throughput on a durable Redis, then report the cost."""
    async with fsyncing_redis(ctx.workdir) as redis_url:
        env = {"FLEET_REDIS_DURABLE": "1", "FLEET_WORKER_CAPACITY": "5000"}
        async with ctx.fleet("durable", redis_url=redis_url, **env) as fleet:
            _, url = await fleet.gateway()
            await asyncio.gather(fleet.worker(), fleet.worker(), fleet.reaper())
            say("durable: latency, then throughput, on a Redis that fsyncs every write")
            latencies = await latency.measure(ctx, url)
            redis = Redis.from_url(redis_url)
            try:
                load = await throughput.measure(ctx, fleet, url, redis)
            finally:
                await redis.aclose()
    return report(latencies, load, baseline)


def report(latencies: Latencies, load: Load, baseline: list[Result]) -> Result:
    """Each durable figure beside the same figure from this run's main fleet."""

    def beside(name: str, value: float, unit: str, of: str) -> Figure:
        # The main fleet's rows only: Celery's have some of the same names.
        main = [r for r in baseline if r.scenario in ("latency", "throughput")]
        same = next((r.figure(of) for r in main if r.figure(of) is not None), None)
        return Figure(name, value, unit, same.value if same else None, BASELINE)

    under_load = load.window.latencies
    return Result(
        "durable",
        figures=[
            beside("echo p50", ms(stat(latencies.replies, "p50")), "ms", "echo p50"),
            beside("echo p99", ms(stat(latencies.replies, "p99")), "ms", "echo p99"),
            beside("answered actions/s", load.rate, "actions/s", "answered actions/s"),
            beside(
                "latency under load p99",
                ms(stat(under_load, "p99")),
                "ms",
                "latency under load p99",
            ),
            Figure(
                "lost + duplicated",
                len(load.counted.lost) + len(load.counted.duplicated),
                "actions",
            ),
        ],
        settings={
            "redis": "appendonly yes, appendfsync always, on the bench machine's disk",
            "fleet": "1 gateway, 2 workers, 1 reaper, FLEET_REDIS_DURABLE=1",
            "latency_actions": len(latencies.replies),
            "throughput_clients": load.clients,
            "throughput_window_s": load.seconds,
        },
    )
