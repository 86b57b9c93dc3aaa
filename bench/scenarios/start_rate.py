"""Start rate: conversations created (``POST /api/conversations`` with a first message)
and answering, per second, with two workers.

A conversation is answering once the echo reply to its first message is in its log
(polled from Redis, pipelined, every ``POLL`` seconds). Each start declares and binds
the conversation's queue, so the ceiling is the raw declare+bind rate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from bench.ceilings import Ceilings
from bench.clients import create
from bench.context import Context
from bench.plan import Plan
from bench.progress import say
from bench.results import Figure, Result, Target, ms, stat
from fleet.harness import LocalFleet

POLL = 0.01
ANSWERED_LENGTH = 4  # user message, then running, reply, awaiting_user_input in one append


@dataclass
class Timeline:
    """``perf_counter`` times by conversation id: POST sent, 201 received, reply logged."""

    first: float = 0.0  # the first POST
    started: dict[str, float] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    creating: bool = True  # False once every POST got its answer (or one failed)

    def since_first(self, times: dict[str, float]) -> list[float]:
        """``times`` as seconds since the first POST, in order."""
        return sorted(t - self.first for t in times.values())


@dataclass(frozen=True, slots=True)
class Starts:
    """Every start's timeline, and what the run cost."""

    count: int
    timeline: Timeline
    cpu: dict[str, float]  # CPU seconds of each process over the whole run
    warnings: dict[str, int]  # logged by the fleet meanwhile

    @property
    def created_rate(self) -> float:
        return self.count / (max(self.timeline.created.values()) - self.timeline.first)

    @property
    def answering_rate(self) -> float:
        return self.count / (max(self.timeline.answered.values()) - self.timeline.first)


async def run(ctx: Context, fleet: LocalFleet, url: str) -> Result:
    """Start conversations as fast as the main fleet takes them, then report the rates."""
    return report(await measure(ctx, fleet, url), ctx.plan, ctx.ceilings)


async def measure(ctx: Context, fleet: LocalFleet, url: str) -> Starts:
    """``start_conversations`` POSTs, ``start_concurrency`` at a time, while a watcher
    polls their logs for the first reply."""
    plan = ctx.plan
    tokens = ctx.users(plan.users)
    timeline = Timeline()
    warned = fleet.warnings()
    meter = ctx.cpu_meter(fleet)
    meter.start()
    say(
        f"start rate: {plan.start_conversations} conversations, "
        f"{plan.start_concurrency} requests at a time"
    )
    watcher = asyncio.create_task(_watch(ctx, fleet, timeline))
    timeline.first = time.perf_counter()
    try:
        await _create_all(url, tokens, plan, timeline)
    except BaseException:
        watcher.cancel()
        raise
    finally:
        timeline.creating = False
    await watcher
    starts = Starts(
        count=plan.start_conversations,
        timeline=timeline,
        cpu=meter.stop(),
        warnings=dict(fleet.warnings() - warned),
    )
    say(
        f"start rate: {starts.created_rate:,.0f} created/s, "
        f"{starts.answering_rate:,.0f} answering/s"
    )
    return starts


async def _create_all(url: str, tokens: list[str], plan: Plan, timeline: Timeline) -> None:
    """Every POST, from ``start_concurrency`` creators that each take the next one."""
    todo = iter(range(plan.start_conversations))

    async def creator(http: aiohttp.ClientSession) -> None:
        for i in todo:
            begun = time.perf_counter()
            cid = await create(http, url, tokens[i % len(tokens)], initial="hello")
            timeline.created[cid] = time.perf_counter()
            timeline.started[cid] = begun

    connector = aiohttp.TCPConnector(limit=plan.start_concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(creator(http) for _ in range(plan.start_concurrency)))


async def _watch(ctx: Context, fleet: LocalFleet, timeline: Timeline) -> None:
    """Poll the logs of created, unanswered conversations until all answered."""
    async with asyncio.timeout(ctx.plan.scenario_timeout):
        while timeline.creating or len(timeline.answered) < len(timeline.created):
            pending = [cid for cid in timeline.created if cid not in timeline.answered]
            if pending:
                async with ctx.redis.pipeline(transaction=False) as pipe:
                    for cid in pending:
                        pipe.llen(fleet.names.log(cid))
                    lengths = await pipe.execute()
                now = time.perf_counter()
                for cid, length in zip(pending, lengths, strict=True):
                    if length >= ANSWERED_LENGTH:
                        timeline.answered[cid] = now
            await asyncio.sleep(POLL)


def report(starts: Starts, plan: Plan, ceilings: Ceilings) -> Result:
    """Created and answering per second beside raw declare+bind; POST and start latency."""
    timeline = starts.timeline
    to_create = [timeline.created[c] - timeline.started[c] for c in timeline.created]
    to_answer = [timeline.answered[c] - timeline.started[c] for c in timeline.answered]
    ceiling = ceilings.declare_rate
    return Result(
        "start rate",
        figures=[
            Figure(
                "created/s",
                starts.created_rate,
                "conv/s",
                ceiling,
                "raw declare+bind",
                Target(">=", 0.80, "ratio"),
            ),
            Figure("answering/s", starts.answering_rate, "conv/s", ceiling, "raw declare+bind"),
            Figure("POST p50", ms(stat(to_create, "p50")), "ms"),
            Figure("POST → answering p99", ms(stat(to_answer, "p99")), "ms"),
        ],
        settings={
            "conversations": starts.count,
            "concurrent_requests": plan.start_concurrency,
            "users": plan.users,
            "initial_message": True,
            "workers": 2,
            "answering": f"reply logged (log length >= {ANSWERED_LENGTH}), polled every {POLL}s",
            "raw_declare_8_channels": round(ceilings.declare_parallel_rate, 1),
            "fleet_warnings": starts.warnings,
            "cpu_seconds": {k: round(v, 2) for k, v in starts.cpu.items()},
        },
        series={
            "created": timeline.since_first(timeline.created),
            "answered": timeline.since_first(timeline.answered),
        },
    )
