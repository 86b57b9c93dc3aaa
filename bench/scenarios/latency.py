"""Latency: one client, one action at a time, until the echo reply arrives.

An action crosses the broker twice (gateway → worker, worker → gateway), so its
ceiling is two raw round trips between two processes.
"""

from __future__ import annotations

import aiohttp

from bench.clients import Session, create
from bench.context import Context
from bench.progress import say
from bench.results import Figure, Result, Target, percentile

WARMUP = 20


async def run(ctx: Context, url: str) -> Result:
    token = ctx.token("bench-latency")
    async with aiohttp.ClientSession() as http:
        cid = await create(http, url, token)
    session = await Session(cid, token).connect(url)
    try:
        for i in range(WARMUP):
            await session.ask(f"warm-{i}")
        latencies = [await session.ask(f"lat-{i}") for i in range(ctx.plan.latency_actions)]
    finally:
        await session.close()
    acks = [session.acked[a] - session.sent[a] for a in session.acked if a.startswith("lat-")]
    ms = 1000.0
    rtt = ctx.ceilings.round_trips
    two = "2 x raw round trip"
    result = Result(
        "latency",
        settings={
            "actions": len(latencies),
            "warmup_actions": WARMUP,
            "clients": 1,
            "measured": "user_action sent → agent message in_reply_to it received",
            "fleet": "1 gateway, 2 workers, 1 reaper",
        },
        series={"latency": latencies},
    )
    result.add(
        Figure(
            "echo p50",
            percentile(latencies, 0.5) * ms,
            "ms",
            2 * percentile(rtt, 0.5) * ms,
            f"{two} p50",
            Target("<=", 3.0),
        )
    )
    result.add(
        Figure(
            "echo p99",
            percentile(latencies, 0.99) * ms,
            "ms",
            2 * percentile(rtt, 0.99) * ms,
            f"{two} p99",
        )
    )
    result.add(Figure("echo max", max(latencies) * ms, "ms", 2 * max(rtt) * ms, f"{two} max"))
    result.add(
        Figure(
            "ack p50",
            percentile(acks, 0.5) * ms,
            "ms",
            percentile(rtt, 0.5) * ms,
            "raw round trip p50",
        )
    )
    say(
        f"latency: echo p50 {percentile(latencies, 0.5) * ms:.2f} ms, "
        f"p99 {percentile(latencies, 0.99) * ms:.2f} ms"
    )
    return result
