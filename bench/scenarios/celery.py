"""Celery, the peer: an echo task on the same RabbitMQ and Redis, in the same run.

A real ``celery worker`` process (threads pool) and a client process of its own
(``bench.celery_client``): first ``latency_actions`` echo tasks one after another,
then as many clients as the fleet's throughput scenario has, each with one task in
flight, for the same window. Its settings are the fleet's guarantees: persistent
messages, publisher confirms, acks late, results in Redis. The fleet's latency and
throughput rows are then set beside these (``bench.peer``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from celery import __version__ as celery_version

from bench.context import Context
from bench.peer import Peer
from bench.procstat import CpuMeter
from bench.progress import say
from bench.results import STATS, Figure, Result, ms, stat
from broker.settings import node_urls

ROOT = Path(__file__).resolve().parents[2]
# One process of 8 threads, 8 x 8 messages prefetched: the setting issue 13 measured.
# Side by side on the 2-core machine, prefork x 2 did worse (164 against 225 tasks/s:
# the task is trivial, so the pool mostly waits on sockets); 4 or 16 threads were
# within the noise.
POOL = "threads"
CONCURRENCY = 8
PREFETCH_MULTIPLIER = 8
WARMUP = 20
READY_TIMEOUT = 30.0
STOP_GRACE = 2.0  # then SIGKILL: its queue is deleted next, whatever it held


async def run(ctx: Context) -> Result:
    """Measure Celery; the context keeps it for the fleet's rows."""
    peer, details = await measure(ctx)
    ctx.peer = peer
    return report(peer, details, ctx)


async def measure(ctx: Context) -> tuple[Peer, dict[str, Any]]:
    plan = ctx.plan
    name = f"{ctx.base}-celery"
    env = {
        **os.environ,
        "BENCH_CELERY_BROKER": node_urls(ctx.amqp_url)[0],
        "BENCH_CELERY_BACKEND": ctx.redis_url,
        "BENCH_CELERY_NAME": name,
    }
    try:
        async with _worker(ctx, env, name) as worker:
            sequential = await _client(env, "latency", plan.latency_actions, WARMUP)
            round_trips: list[float] = sequential["latencies"]
            say(
                f"celery: echo p50 {ms(stat(round_trips, 'p50')):.2f} ms, "
                f"p99 {ms(stat(round_trips, 'p99')):.2f} ms"
            )
            pids = {"celery worker": worker.pid, **ctx.service_pids}
            loop, cpu = await _load(env, pids, ctx)
    finally:
        await _clean(ctx, name)
    answered = max(1, int(loop["answered"]))
    peer = Peer(
        round_trips=round_trips,
        rate=answered / plan.throughput_seconds,
        under_load=loop["latencies"],
        cpu_per_task=sum(cpu.values()) / answered,
    )
    say(f"celery: {peer.rate:,.0f} tasks/s, p99 {ms(stat(peer.under_load, 'p99')):.1f} ms")
    return peer, {"cpu": {k: v / answered for k, v in cpu.items()}, "errors": loop["errors"]}


@asynccontextmanager
async def _worker(
    ctx: Context, env: dict[str, str], name: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``celery worker``, once it consumes; stopped (warm shutdown) on exit."""
    log = (ctx.workdir / f"{name}-worker.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_app",
        "--quiet",
        "worker",
        f"--pool={POOL}",
        f"--concurrency={CONCURRENCY}",
        f"--prefetch-multiplier={PREFETCH_MULTIPLIER}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
        f"--hostname={name}@%h",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT):
            while (line := await process.stdout.readline()) != b"ready\n":
                if not line:
                    raise RuntimeError(f"celery worker exited; see {log.name}")
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:  # it notices only when its event loop next wakes up, up to 10 s idle
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def _client(env: dict[str, str], *args: object) -> dict[str, Any]:
    """``bench.celery_client`` run to its end; its JSON line."""
    process = await _start_client(env, *args)
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"bench.celery_client {args[0]} exited {process.returncode}")
    found: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return found


async def _start_client(env: dict[str, str], *args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.celery_client",
        *map(str, args),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )


async def _load(
    env: dict[str, str], pids: dict[str, int], ctx: Context
) -> tuple[dict[str, Any], dict[str, float]]:
    """The closed loop, and the CPU each process used in its window."""
    plan = ctx.plan
    clients = plan.throughput_conversations
    say(f"celery: {clients} clients, closed loop, {plan.throughput_seconds:.0f} s window")
    process = await _start_client(
        env, "load", clients, plan.throughput_warmup, plan.throughput_seconds
    )
    assert process.stdout is not None
    try:
        if await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT) != b"go\n":
            raise RuntimeError("bench.celery_client load did not start")
        meter = CpuMeter({**pids, "celery client": process.pid})
        await asyncio.sleep(plan.throughput_warmup)
        meter.start()
        await asyncio.sleep(plan.throughput_seconds)
        cpu = meter.stop()
        out = await asyncio.wait_for(process.stdout.read(), READY_TIMEOUT + 10)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    loop: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return loop, cpu


async def _clean(ctx: Context, name: str) -> None:
    """The queue, its exchange and every result key of the run's Celery."""
    connection = await aio_pika.connect(node_urls(ctx.amqp_url)[0])
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
        await channel.exchange_delete(name)
    keys = [key async for key in ctx.redis.scan_iter(match=f"{name}:*", count=1000)]
    for first in range(0, len(keys), 1000):
        await ctx.redis.unlink(*keys[first : first + 1000])


def report(peer: Peer, details: dict[str, Any], ctx: Context) -> Result:
    """Celery's own figures; the fleet's rows set themselves beside these."""
    plan = ctx.plan
    cpu: dict[str, float] = details["cpu"]
    return Result(
        "celery",
        figures=[
            *(Figure(f"echo {w}", ms(stat(peer.round_trips, w)), "ms") for w in STATS),
            Figure("tasks/s", peer.rate, "tasks/s"),
            Figure("latency under load p50", ms(stat(peer.under_load, "p50")), "ms"),
            Figure("latency under load p99", ms(stat(peer.under_load, "p99")), "ms"),
            *(Figure(f"CPU per task: {k}", ms(v), "ms") for k, v in cpu.items()),
            Figure("CPU per task: total", ms(peer.cpu_per_task), "ms"),
        ],
        settings={
            "celery": celery_version,
            "pool": POOL,
            "concurrency": CONCURRENCY,
            "prefetch_multiplier": PREFETCH_MULTIPLIER,
            "acks_late": True,
            "publisher_confirms": True,
            "persistent": True,
            "result_backend": "redis (pub/sub wake-up)",
            "worker_flags": "--without-gossip --without-mingle --without-heartbeat",
            "echo_tasks": len(peer.round_trips),
            "warmup_tasks": WARMUP,
            "clients": plan.throughput_conversations,
            "in_flight_per_client": 1,
            "window_s": plan.throughput_seconds,
            "warmup_s": plan.throughput_warmup,
            "errors": details["errors"],
            "measured": "apply_async → get() returned, in a client process of its own",
        },
        series={"latency": peer.round_trips},
    )
