"""Scale: one worker owning N idle conversations.

The conversations are created first (their claim requests wait in the dispatch
queue), then the worker starts; "claimed" is when Redis says it owns all N,
"consuming" when RabbitMQ shows a consumer on each of their queues. Then, idle:

- worker RSS: VmRSS from /proc/<pid>/status (and a fresh worker's, for the base);
- Redis round trips per heartbeat tick: the worker talks to Redis through
  ``bench.redisproxy.CountingProxy``, which counts its commands and round trips
  over a window; divided by the ticks in that window (window ÷ heartbeat interval);
- broker memory per conversation: ``rabbitmqctl list_queues memory`` of its queues
  (the queue processes), and the broker's total (``erlang:memory(total)``) before
  the conversations were created and after they were claimed, divided by N.
"""

from __future__ import annotations

import asyncio
import signal
import time
from functools import partial
from typing import cast

import aiohttp

from bench import polling, rabbit
from bench.clients import Session, bounded, close_all, connect_all, create
from bench.context import Context
from bench.fleet import LocalFleet, log_time
from bench.progress import say
from bench.redisproxy import CountingProxy
from bench.results import Figure, Result, Target
from broker.redis import text

HEARTBEAT_INTERVAL = 0.25  # FLEET_LIVENESS_TTL (1 s) / 4, the fleet default
TARGET_CONVERSATIONS = 10_000
SAMPLE = 20  # conversations asked once after the claims, to show they answer
MB = 1e6


async def _create(ctx: Context, url: str, n: int) -> float:
    """Create ``n`` conversations; how many per second."""
    tokens = ctx.users(ctx.plan.users)
    began = time.perf_counter()
    done = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=ctx.plan.start_concurrency)
    ) as http:
        for first in range(0, n, 1000):
            batch = range(first, min(n, first + 1000))
            jobs = [partial(create, http, url, tokens[i % len(tokens)]) for i in batch]
            done += len(await bounded(ctx.plan.start_concurrency, jobs))
            say(f"scale: created {done}/{n} conversations")
    return n / (time.perf_counter() - began)


async def _base_rss(fleet: LocalFleet) -> int:
    """RSS of a worker that owns nothing, after it settled for a second."""
    process, _ = await fleet.worker()
    await asyncio.sleep(1.0)
    rss = process.rss()
    process.send(signal.SIGTERM)
    await process.wait(15.0)
    return rss


async def _consuming(prefix: str, n: int, timeout: float) -> None:
    """Return once ``n`` queues named ``prefix...`` each have a consumer (bounded)."""

    async def consumed() -> bool:
        found = await rabbit.queues(prefix)
        return sum(1 for _, consumers in found.values() if consumers > 0) >= n

    await polling.until(consumed, 0.5, timeout)


async def run(ctx: Context) -> Result:
    plan = ctx.plan
    n = plan.scale_conversations
    proxy = CountingProxy()
    port = await proxy.start()
    try:
        async with ctx.fleet("scale", FLEET_WORKER_CAPACITY=str(2 * n)) as fleet:
            _, url = await fleet.gateway()
            await fleet.reaper()
            base_rss = await _base_rss(fleet)
            broker_before = await rabbit.total_memory()
            created_rate = await _create(ctx, url, n)
            worker, worker_id = await fleet.worker(FLEET_REDIS_URL=f"redis://127.0.0.1:{port}/0")
            started = log_time(worker.events("worker_started")[0])

            async def owned() -> bool:
                return int(await ctx.redis.scard(fleet.names.owns(worker_id))) >= n

            await polling.until(owned, 0.1, plan.scenario_timeout)
            claimed = time.time() - started
            await _consuming(f"{fleet.names.namespace}.conv.", n, plan.scenario_timeout)
            consuming = time.time() - started
            say(f"scale: {n} claimed in {claimed:.1f} s, all consuming after {consuming:.1f} s")
            await asyncio.sleep(2.0)  # let the last claims' garbage go before measuring
            rss = worker.rss()
            proxy.reset()
            await asyncio.sleep(plan.heartbeat_window)
            commands = dict(proxy.commands)
            round_trips = proxy.round_trips
            queue_memory = await rabbit.queue_memory(f"{fleet.names.namespace}.conv.")
            broker_after = await rabbit.total_memory()
            sample = await _sample(ctx, fleet, worker_id, url)
            warnings = dict(fleet.warnings())
    finally:
        await proxy.close()
    ticks = plan.heartbeat_window / HEARTBEAT_INTERVAL
    per_queue = sum(queue_memory.values()) / max(1, len(queue_memory))
    result = Result(
        "scale",
        settings={
            "conversations": n,
            "created_per_s": round(created_rate, 1),
            "heartbeat_interval_s": HEARTBEAT_INTERVAL,
            "idle_window_s": plan.heartbeat_window,
            "redis_commands_in_window": commands,
            "redis_counting": "per-process proxy (bench.redisproxy), not INFO commandstats",
            "broker_total_delta_per_conversation_kib": round(
                (broker_after - broker_before) / n / 1024, 1
            ),
            "base_worker_rss_mb": round(base_rss / MB, 1),
            "sample_first_action_ms": [round(x * 1000, 1) for x in sample[0]],
            "sample_second_action_ms": [round(x * 1000, 1) for x in sample[1]],
            "fleet_warnings": warnings,
        },
    )
    redeclare = ctx.ceilings.redeclare_rate
    label = "N / raw re-declare"
    result.add(Figure("worker RSS", rss / MB, "MB"))
    per_conversation = (rss - base_rss) / n
    at_target = base_rss + per_conversation * TARGET_CONVERSATIONS
    name = "worker RSS at 10,000" + ("" if n == TARGET_CONVERSATIONS else " (extrapolated)")
    result.add(Figure(name, at_target / MB, "MB", target=Target("<=", 300)))
    result.add(Figure("RSS per conversation", per_conversation / 1024, "KiB"))
    result.add(
        Figure(
            "Redis round trips per heartbeat tick",
            round_trips / ticks,
            "per tick",
            1.0,
            "one heartbeat script",
            Target("<=", 1.0),
        )
    )
    result.add(
        Figure(
            "broker memory per conversation",
            per_queue / 1024,
            "KiB",
            ctx.ceilings.queue_memory / 1024,
            "raw idle queue",
        )
    )
    result.add(Figure("claimed all after", claimed, "s", n / redeclare, label))
    result.add(Figure("consuming all after", consuming, "s", n / redeclare, label))
    say(
        f"scale: RSS {rss / MB:.0f} MB, {round_trips / ticks:.2f} Redis round trips per tick, "
        f"{per_queue / 1024:.1f} KiB broker memory per conversation"
    )
    return result


async def _sample(
    ctx: Context, fleet: LocalFleet, worker_id: str, url: str
) -> tuple[list[float], list[float]]:
    """Ask a few of the idle conversations two actions each: they still answer
    (latency of the first action after the idle window, then of the next one)."""
    owned = cast(list[bytes], await ctx.redis.srandmember(fleet.names.owns(worker_id), SAMPLE))
    cids = [c.decode() for c in owned]
    users = [text(await ctx.redis.hget(fleet.names.meta(c), "user") or b"") for c in cids]
    sessions = [Session(c, ctx.token(user)) for c, user in zip(cids, users, strict=True)]
    await connect_all(url, sessions)
    try:
        first = await asyncio.gather(*(s.ask("sample-1") for s in sessions))
        second = await asyncio.gather(*(s.ask("sample-2") for s in sessions))
        return list(first), list(second)
    finally:
        await close_all(sessions)
