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

Then the worker drains to one that passivates idle conversations after a second:
once all N are passivated their queues are gone, and the broker's total, beside what
it was before they were made, is what N passivated conversations cost it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass
from functools import partial

import aiohttp

from bench import polling, rabbit
from bench.accounting import owned_by
from bench.ceilings import Ceilings
from bench.clients import Session, bounded, close_all, connect_all, create
from bench.context import Context
from bench.progress import say
from bench.redisproxy import CountingProxy
from bench.results import Figure, Result, Target, ms
from broker.redis import text
from fleet.harness import FleetProcess, LocalFleet, log_time

HEARTBEAT_INTERVAL = 0.25  # FLEET_LIVENESS_TTL (1 s) / 4, the fleet default
TARGET_CONVERSATIONS = 10_000
SAMPLE = 20  # conversations asked once after the claims, to show they answer
MB = 1e6


@dataclass(frozen=True, slots=True)
class Scale:
    """One worker owning N idle conversations: how fast it got there, and what it holds."""

    conversations: int
    created_rate: float  # conversations/s, before the worker started
    claimed: float  # seconds from the worker's start until it owned all N
    consuming: float  # ... until each of their queues had a consumer
    base_rss: int  # bytes, a worker that owns nothing
    rss: int  # bytes, the worker that owns N
    window: float  # seconds of idle heartbeats counted
    commands: dict[str, int]  # the worker's Redis commands in the window
    round_trips: int  # ... and its round trips
    queue_memory: dict[str, int]  # bytes of each conversation queue's process
    broker_before: int  # bytes the broker had allocated before the conversations
    broker_after: int  # ... and once they were claimed
    sample: tuple[list[float], list[float]]  # seconds: a first action after idling, a second
    passivated: float  # seconds from the drain until all N were passivated, queues deleted
    broker_passivated: int  # bytes the broker had allocated then
    warnings: dict[str, int]  # logged by the fleet

    @property
    def round_trips_per_tick(self) -> float:
        return self.round_trips / (self.window / HEARTBEAT_INTERVAL)

    @property
    def per_queue(self) -> float:
        """Bytes per conversation queue."""
        return sum(self.queue_memory.values()) / max(1, len(self.queue_memory))


async def run(ctx: Context) -> Result:
    """Give one worker N idle conversations, then report its and the broker's footprint."""
    return report(await measure(ctx), ctx.ceilings)


async def measure(ctx: Context) -> Scale:
    """Create N conversations, start the worker that claims them all, then watch it idle."""
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
            claimed, consuming = await _claimed(ctx, fleet, worker, worker_id, n)
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
            passivated = await _passivate_all(ctx, fleet, worker, n)
            broker_passivated = await rabbit.total_memory()
    finally:
        await proxy.close()
    scale = Scale(
        conversations=n,
        created_rate=created_rate,
        claimed=claimed,
        consuming=consuming,
        base_rss=base_rss,
        rss=rss,
        window=plan.heartbeat_window,
        commands=commands,
        round_trips=round_trips,
        queue_memory=queue_memory,
        broker_before=broker_before,
        broker_after=broker_after,
        sample=sample,
        passivated=passivated,
        broker_passivated=broker_passivated,
        warnings=warnings,
    )
    say(
        f"scale: RSS {rss / MB:.0f} MB, {scale.round_trips_per_tick:.2f} Redis round trips "
        f"per tick, {scale.per_queue / 1024:.1f} KiB broker memory per conversation"
    )
    return scale


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
    process.signal(signal.SIGTERM)
    await process.wait(15.0)
    return rss


async def _claimed(
    ctx: Context, fleet: LocalFleet, worker: FleetProcess, worker_id: str, n: int
) -> tuple[float, float]:
    """Seconds from the worker's start until it owned all ``n`` conversations (Redis),
    and until each of their queues had a consumer (RabbitMQ)."""
    started = log_time(worker.events("worker_started")[0])

    async def owned() -> bool:
        return len(await owned_by(ctx.redis, fleet.names, worker_id)) >= n

    await polling.until(owned, 0.1, ctx.plan.scenario_timeout)
    claimed = time.time() - started
    await _consuming(f"{fleet.names.namespace}.conv.", n, ctx.plan.scenario_timeout)
    consuming = time.time() - started
    say(f"scale: {n} claimed in {claimed:.1f} s, all consuming after {consuming:.1f} s")
    return claimed, consuming


async def _consuming(prefix: str, n: int, timeout: float) -> None:
    """Return once ``n`` queues named ``prefix...`` each have a consumer (bounded)."""

    async def consumed() -> bool:
        found = await rabbit.queues(prefix)
        return sum(1 for _, consumers in found.values() if consumers > 0) >= n

    await polling.until(consumed, 0.5, timeout)


async def _passivate_all(ctx: Context, fleet: LocalFleet, owner: FleetProcess, n: int) -> float:
    """Drain ``owner`` to a worker that passivates idle conversations after a second;
    seconds until all ``n`` are passivated and their queues deleted."""
    began = time.perf_counter()
    await fleet.worker(FLEET_PASSIVATE_AFTER="1", FLEET_WORKER_CAPACITY=str(2 * n))
    owner.signal(signal.SIGTERM)
    prefix = f"{fleet.names.namespace}.conv."

    async def all_passivated() -> bool:
        if int(await ctx.redis.zcard(fleet.names.by_status("idle", 0))) < n:
            return False
        return not await rabbit.queues(prefix)

    await polling.until(all_passivated, 0.5, ctx.plan.scenario_timeout)
    seconds = time.perf_counter() - began
    say(f"scale: {n} passivated, their queues deleted, after {seconds:.1f} s")
    return seconds


async def _sample(
    ctx: Context, fleet: LocalFleet, worker_id: str, url: str
) -> tuple[list[float], list[float]]:
    """Ask a few of the idle conversations two actions each: they still answer
    (latency of the first action after the idle window, then of the next one)."""
    cids = random.sample(sorted(await owned_by(ctx.redis, fleet.names, worker_id)), SAMPLE)
    users = [text(await ctx.redis.hget(fleet.names.meta(c), "user") or b"") for c in cids]
    sessions = [Session(c, ctx.token(user)) for c, user in zip(cids, users, strict=True)]
    await connect_all(url, sessions)
    try:
        first = await asyncio.gather(*(s.ask("sample-1") for s in sessions))
        second = await asyncio.gather(*(s.ask("sample-2") for s in sessions))
        return list(first), list(second)
    finally:
        await close_all(sessions)


def report(scale: Scale, ceilings: Ceilings) -> Result:
    """Worker RSS (extrapolated to 10,000), Redis round trips per heartbeat tick, broker
    memory per conversation, and how long claiming took beside raw re-declares."""
    n = scale.conversations
    per_conversation = (scale.rss - scale.base_rss) / n
    at_target = scale.base_rss + per_conversation * TARGET_CONVERSATIONS
    extrapolated = "" if n == TARGET_CONVERSATIONS else " (extrapolated)"
    move_all = n / ceilings.redeclare_rate
    label = "N / raw re-declare"
    return Result(
        "scale",
        figures=[
            Figure("worker RSS", scale.rss / MB, "MB"),
            Figure(
                f"worker RSS at 10,000{extrapolated}",
                at_target / MB,
                "MB",
                target=Target("<=", 300),
            ),
            Figure("RSS per conversation", per_conversation / 1024, "KiB"),
            Figure(
                "Redis round trips per heartbeat tick",
                scale.round_trips_per_tick,
                "per tick",
                1.0,
                "one heartbeat script",
                Target("<=", 1.0),
            ),
            Figure(
                "broker memory per conversation",
                scale.per_queue / 1024,
                "KiB",
                ceilings.queue_memory / 1024,
                "raw idle queue",
            ),
            Figure("claimed all after", scale.claimed, "s", move_all, label),
            Figure("consuming all after", scale.consuming, "s", move_all, label),
            Figure(
                f"broker memory, {n:,} passivated",
                (scale.broker_passivated - scale.broker_before) / MB,
                "MB",
                n * ceilings.queue_memory / MB,
                "N x raw idle queue",
            ),
            Figure("passivated all after", scale.passivated, "s"),
        ],
        settings={
            "conversations": n,
            "created_per_s": round(scale.created_rate, 1),
            "heartbeat_interval_s": HEARTBEAT_INTERVAL,
            "idle_window_s": scale.window,
            "redis_commands_in_window": scale.commands,
            "redis_counting": "per-process proxy (bench.redisproxy), not INFO commandstats",
            "broker_total_delta_per_conversation_kib": round(
                (scale.broker_after - scale.broker_before) / n / 1024, 1
            ),
            "base_worker_rss_mb": round(scale.base_rss / MB, 1),
            "sample_first_action_ms": [round(ms(x), 1) for x in scale.sample[0]],
            "sample_second_action_ms": [round(ms(x), 1) for x in scale.sample[1]],
            "fleet_warnings": scale.warnings,
        },
    )
