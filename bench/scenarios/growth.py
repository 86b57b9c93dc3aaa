"""Growth: the same 100 active conversations beside 1k, 2k, then 4k idle ones.

One gateway and one worker (so the worker holds every conversation). At each size
the idle conversations are created over HTTP (started, then left alone) until the
worker owns them all; then its RSS, the broker memory of the conversation queues,
and a closed loop of the 100 active clients with the CPU of every process. Cost
should grow with what is done, not with what is held: CPU per action flat, memory
per conversation flat. Each size is set beside the first (ratio 1.00 = flat).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from functools import partial

import aiohttp

from bench import polling, rabbit
from bench.accounting import owned_by
from bench.clients import bounded, close_all, connect_all, create, create_all
from bench.context import Context
from bench.progress import say
from bench.results import Figure, Result, Target, ms
from bench.scenarios.throughput import closed_loop

ACTIVE = 100
FLAT = Target("<=", 1.2, "ratio")  # within 20% of the smallest size: noise, not growth
KIB = 1024


@dataclass(frozen=True, slots=True)
class Step:
    """One size: what the worker and broker held, and what an action cost."""

    conversations: int  # idle + active
    worker_rss: int  # bytes
    queue_memory: float  # bytes per conversation queue
    answered: int
    seconds: float
    cpu: dict[str, float]  # CPU seconds per process in the window

    @property
    def rate(self) -> float:
        return self.answered / self.seconds

    @property
    def cpu_per_action(self) -> float:
        return sum(self.cpu.values()) / max(1, self.answered)


async def run(ctx: Context) -> Result:
    """Grow the idle conversations size by size, measuring at each."""
    plan = ctx.plan
    sizes = plan.growth_sizes
    async with ctx.fleet("growth", FLEET_WORKER_CAPACITY=str(2 * sizes[-1])) as fleet:
        _, url = await fleet.gateway()
        worker, worker_id = await fleet.worker()
        await fleet.reaper()
        await asyncio.sleep(1.0)  # settled: its base RSS
        base_rss = worker.rss()
        sessions = await create_all(url, ctx.users(plan.users), ACTIVE)
        await connect_all(url, sessions)
        steps: list[Step] = []
        try:
            await asyncio.gather(*(s.ask(f"warm-{i}") for i, s in enumerate(sessions)))
            idle = 0
            for size in sizes:
                await _create(ctx, url, size - idle)
                idle = size

                async def owned(total: int = size + ACTIVE) -> bool:
                    return len(await owned_by(ctx.redis, fleet.names, worker_id)) >= total

                await polling.until(owned, 0.2, plan.scenario_timeout)
                await asyncio.sleep(1.0)  # the claims' garbage goes before RSS is read
                rss = worker.rss()
                queues = await rabbit.queue_memory(f"{fleet.names.namespace}.conv.")
                window_plan = dataclasses.replace(
                    plan, throughput_seconds=plan.growth_window, throughput_warmup=1.0
                )
                meter = ctx.cpu_meter(fleet)
                window, cpu = await closed_loop(sessions, window_plan, meter, f"g{size}-", "growth")
                step = Step(
                    conversations=size + ACTIVE,
                    worker_rss=rss,
                    queue_memory=sum(queues.values()) / max(1, len(queues)),
                    answered=window.answered,
                    seconds=plan.growth_window,
                    cpu=cpu,
                )
                steps.append(step)
                say(
                    f"growth: {step.conversations:,} conversations, {step.rate:,.0f} actions/s, "
                    f"{ms(step.cpu_per_action):.2f} ms CPU per action"
                )
        finally:
            await close_all(sessions)
    say("growth:\n" + table(steps, base_rss))
    return report(steps, base_rss, plan.growth_window)


async def _create(ctx: Context, url: str, n: int) -> None:
    """``n`` conversations, started and then left idle."""
    tokens = ctx.users(ctx.plan.users)
    limit = ctx.plan.start_concurrency
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as http:
        jobs = [partial(create, http, url, tokens[i % len(tokens)]) for i in range(n)]
        await bounded(limit, jobs)


def per_conversation(step: Step, base_rss: int) -> float:
    """Bytes of worker RSS per conversation it owns, above a worker that owns none."""
    return (step.worker_rss - base_rss) / step.conversations


def table(steps: list[Step], base_rss: int) -> str:
    """The small table the phase prints: one line per size."""
    head = f"{'conversations':>14} {'actions/s':>10} {'CPU/action':>11} {'worker/conv':>12} "
    head += f"{'broker/conv':>12}"
    lines = [head]
    for step in steps:
        lines.append(
            f"{step.conversations:>14,} {step.rate:>10,.0f} {ms(step.cpu_per_action):>8.2f} ms "
            f"{per_conversation(step, base_rss) / KIB:>8.1f} KiB "
            f"{step.queue_memory / KIB:>8.1f} KiB"
        )
    return "\n".join(lines)


def report(steps: list[Step], base_rss: int, window: float) -> Result:
    """Per size: CPU per action and memory per conversation, beside the first size's."""
    first = steps[0]
    label = f"at {first.conversations:,}"
    figures: list[Figure] = []
    for step in steps:
        at = f"at {step.conversations:,}"
        target = None if step is first else FLAT
        figures += [
            Figure(
                f"CPU per action {at}",
                ms(step.cpu_per_action),
                "ms",
                ms(first.cpu_per_action),
                label,
                target,
            ),
            Figure(
                f"worker memory per conversation {at}",
                per_conversation(step, base_rss) / KIB,
                "KiB",
                per_conversation(first, base_rss) / KIB,
                label,
                target,
            ),
            Figure(
                f"broker memory per conversation {at}",
                step.queue_memory / KIB,
                "KiB",
                first.queue_memory / KIB,
                label,
                target,
            ),
        ]
    return Result(
        "growth",
        figures=figures,
        settings={
            "active_conversations": ACTIVE,
            "conversations": [s.conversations for s in steps],
            "window_s": window,
            "fleet": "1 gateway, 1 worker, 1 reaper",
            "base_worker_rss_mb": round(base_rss / 1e6, 1),
            "actions_per_s": [round(s.rate, 1) for s in steps],
            "cpu_seconds_in_window": [{k: round(v, 2) for k, v in s.cpu.items()} for s in steps],
            "measured": "worker VmRSS and rabbitmqctl queue memory once all are owned; "
            "CPU of every process (fleet, bench clients, Redis, RabbitMQ) in a closed loop "
            "of the active clients",
        },
        series={
            "conversations": [s.conversations for s in steps],
            "cpu_per_action": [ms(s.cpu_per_action) for s in steps],
            "memory_per_conversation": [per_conversation(s, base_rss) / KIB for s in steps],
        },
    )
