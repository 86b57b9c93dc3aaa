"""Start rate: conversations created (``POST /api/conversations`` with a first message)
and answering, per second, with two workers.

A conversation is answering once the echo reply to its first message is in its log
(polled from Redis, pipelined, every ``POLL`` seconds). Each start declares and binds
the conversation's queue, so the ceiling is the raw declare+bind rate.
"""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp

from bench.clients import create
from bench.context import Context
from bench.fleet import LocalFleet
from bench.procstat import CpuMeter
from bench.progress import say
from bench.results import Figure, Result, Target, percentile

POLL = 0.01
ANSWERED_LENGTH = 4  # user message, then running, reply, awaiting_user_input in one append


async def run(ctx: Context, fleet: LocalFleet, url: str) -> Result:
    plan = ctx.plan
    tokens = ctx.users(plan.users)
    count = plan.start_conversations
    started: dict[str, float] = {}
    created: dict[str, float] = {}
    answered: dict[str, float] = {}
    todo = iter(range(count))
    creating = True

    async def creator(http: aiohttp.ClientSession) -> None:
        for i in todo:
            begun = time.perf_counter()
            cid = await create(http, url, tokens[i % len(tokens)], initial="hello")
            created[cid] = time.perf_counter()
            started[cid] = begun

    async def watch() -> None:
        """Poll the logs of created, unanswered conversations until all answered."""
        async with asyncio.timeout(ctx.plan.scenario_timeout):
            while creating or len(answered) < len(created):
                pending = [cid for cid in created if cid not in answered]
                if pending:
                    async with ctx.redis.pipeline(transaction=False) as pipe:
                        for cid in pending:
                            pipe.llen(fleet.names.log(cid))
                        lengths = await pipe.execute()
                    now = time.perf_counter()
                    for cid, length in zip(pending, lengths, strict=True):
                        if length >= ANSWERED_LENGTH:
                            answered[cid] = now
                await asyncio.sleep(POLL)

    warned = fleet.warnings()
    pids = {p.name: p.pid for p in fleet.processes if p.running}
    meter = CpuMeter({**pids, "bench clients": os.getpid(), **ctx.service_pids})
    meter.start()
    say(f"start rate: {count} conversations, {plan.start_concurrency} requests at a time")
    watcher = asyncio.create_task(watch())
    first = time.perf_counter()
    try:
        connector = aiohttp.TCPConnector(limit=plan.start_concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(creator(http) for _ in range(plan.start_concurrency)))
    except BaseException:
        watcher.cancel()
        raise
    finally:
        creating = False
    await watcher
    cpu = meter.stop()
    created_rate = count / (max(created.values()) - first)
    answering_rate = count / (max(answered.values()) - first)
    to_answer = [answered[c] - started[c] for c in answered]
    to_create = [created[c] - started[c] for c in created]
    ceiling = ctx.ceilings.declare_rate
    result = Result(
        "start rate",
        settings={
            "conversations": count,
            "concurrent_requests": plan.start_concurrency,
            "users": plan.users,
            "initial_message": True,
            "workers": 2,
            "answering": f"reply logged (log length >= {ANSWERED_LENGTH}), polled every {POLL}s",
            "raw_declare_8_channels": round(ctx.ceilings.declare_parallel_rate, 1),
            "fleet_warnings": dict(fleet.warnings() - warned),
            "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        },
        series={
            "created": sorted(t - first for t in created.values()),
            "answered": sorted(t - first for t in answered.values()),
        },
    )
    result.add(
        Figure(
            "created/s",
            created_rate,
            "conv/s",
            ceiling,
            "raw declare+bind",
            Target(">=", 0.80, "ratio"),
        )
    )
    result.add(Figure("answering/s", answering_rate, "conv/s", ceiling, "raw declare+bind"))
    result.add(Figure("POST p50", percentile(to_create, 0.5) * 1000, "ms"))
    result.add(Figure("POST → answering p99", percentile(to_answer, 0.99) * 1000, "ms"))
    say(f"start rate: {created_rate:,.0f} created/s, {answering_rate:,.0f} answering/s")
    return result
