"""Throughput: many clients, each with one action in flight, for a fixed window.

Closed loop: a client sends its next action as soon as the last one is answered, so
the fleet runs saturated and the latency under that load is measured too. CPU time
per action of every process (from /proc) shows where the time goes.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from functools import partial

import aiohttp

from bench.accounting import tally
from bench.clients import Session, bounded, close_all, connect_all, create, settle
from bench.context import Context
from bench.fleet import LocalFleet
from bench.procstat import CpuMeter
from bench.progress import say
from bench.results import Figure, Result, Target, percentile


@dataclass
class Window:
    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answered: int = 0


async def _loop(session: Session, index: int, stop: asyncio.Event, window: Window) -> None:
    n = 0
    while not stop.is_set():
        action_id = f"tp-{index}-{n}"
        n += 1
        try:
            latency = await session.ask(action_id)
        except (RuntimeError, TimeoutError):
            continue  # counted by the tally as refused or lost
        arrived = session.replies[action_id][0]
        if window.start <= arrived < window.end:
            window.answered += 1
            window.latencies.append(latency)


async def run(ctx: Context, fleet: LocalFleet, url: str) -> Result:
    plan = ctx.plan
    tokens = ctx.users(plan.users)
    async with aiohttp.ClientSession() as http:
        cids = await bounded(
            20,
            [
                partial(create, http, url, tokens[i % len(tokens)])
                for i in range(plan.throughput_conversations)
            ],
        )
    sessions = [Session(cid, tokens[i % len(tokens)]) for i, cid in enumerate(cids)]
    await connect_all(url, sessions)
    warned = fleet.warnings()
    pids = {p.name: p.pid for p in fleet.processes if p.running}
    meter = CpuMeter({**pids, "bench clients": os.getpid(), **ctx.service_pids})
    try:
        await asyncio.gather(*(s.ask(f"warm-{i}") for i, s in enumerate(sessions)))
        stop = asyncio.Event()
        now = time.perf_counter()
        window = Window(now + plan.throughput_warmup, now + plan.throughput_warmup)
        window.end += plan.throughput_seconds
        say(
            f"throughput: {len(sessions)} clients, closed loop, "
            f"{plan.throughput_seconds:.0f} s window"
        )
        async with asyncio.TaskGroup() as loops:
            for i, session in enumerate(sessions):
                loops.create_task(_loop(session, i, stop, window))
            await asyncio.sleep(plan.throughput_warmup)
            meter.start()
            await asyncio.sleep(plan.throughput_seconds)
            cpu = meter.stop()
            stop.set()  # each client finishes the action in hand
        await settle(sessions, timeout=30)
        counted = await tally(sessions, ctx.redis, fleet.names, prefix="tp-")
    finally:
        await close_all(sessions)
    rate = window.answered / plan.throughput_seconds
    ms = 1000.0
    result = Result(
        "throughput",
        settings={
            "conversations": len(sessions),
            "clients": len(sessions),
            "users": plan.users,
            "in_flight_per_client": 1,
            "window_s": plan.throughput_seconds,
            "warmup_s": plan.throughput_warmup,
            "fleet": "1 gateway, 2 workers, 1 reaper",
            "cpu_seconds_in_window": {k: round(v, 2) for k, v in cpu.items()},
            "acked": counted.acked,
            "lost": len(counted.lost),
            "duplicated": len(counted.duplicated),
            "misordered": len(counted.misordered),
            "fleet_warnings": dict(fleet.warnings() - warned),
        },
        series={"latency": window.latencies},
    )
    result.add(
        Figure(
            "answered actions/s",
            rate,
            "actions/s",
            ctx.ceilings.publish_consume_rate,
            "raw publish→consume",
            Target(">=", 0.40, "ratio"),
        )
    )
    rtt = ctx.ceilings.round_trips
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        result.add(
            Figure(
                f"latency under load {label}",
                percentile(window.latencies, q) * ms,
                "ms",
                2 * percentile(rtt, q) * ms,
                f"2 x raw round trip {label}",
            )
        )
    answered = max(1, window.answered)
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    gateways = sum(v for k, v in cpu.items() if k.startswith("gateway"))
    for name, seconds in [
        ("gateway", gateways),
        ("workers", workers),
        ("bench clients", cpu.get("bench clients", 0.0)),
        ("redis", cpu.get("redis", 0.0)),
    ]:
        result.add(Figure(f"CPU per action: {name}", seconds / answered * ms, "ms"))
    if "rabbitmq" in cpu:
        raw = ctx.ceilings.broker_cpu_per_message
        result.add(
            Figure(
                "CPU per action: rabbitmq",
                cpu["rabbitmq"] / answered * ms,
                "ms",
                raw * ms if raw else None,
                "raw broker CPU per message",
            )
        )
    result.add(Figure("lost + duplicated", len(counted.lost) + len(counted.duplicated), "actions"))
    say(
        f"throughput: {rate:,.0f} answered actions/s, "
        f"p99 {percentile(window.latencies, 0.99) * ms:.1f} ms"
    )
    return result
