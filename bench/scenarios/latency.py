"""Latency: one client, one action at a time, until the echo reply arrives.

An action crosses the broker twice (gateway → worker, worker → gateway), so its
ceiling is two raw round trips between two processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from bench import peer
from bench.ceilings import Ceilings, two_round_trips
from bench.clients import Session, create
from bench.context import Context
from bench.peer import Peer
from bench.progress import say
from bench.results import Figure, Result, Target, ms, stat

WARMUP = 20


@dataclass(frozen=True, slots=True)
class Latencies:
    """Seconds from sending each measured action until its reply, and until its ack."""

    replies: list[float]
    acks: list[float]


async def run(ctx: Context, url: str) -> Result:
    """Measure one client's echo latency, then report it beside the raw round trips."""
    return report(await measure(ctx, url), ctx.ceilings, ctx.peer)


async def measure(ctx: Context, url: str) -> Latencies:
    """``latency_actions`` actions, one after another, in one conversation."""
    token = ctx.token("bench-latency")
    async with aiohttp.ClientSession() as http:
        cid = await create(http, url, token)
    session = await Session(cid, token).connect(url)
    try:
        for i in range(WARMUP):
            await session.ask(f"warm-{i}")
        replies = [await session.ask(f"lat-{i}") for i in range(ctx.plan.latency_actions)]
    finally:
        await session.close()
    acks = [session.acked[a] - session.sent[a] for a in session.acked if a.startswith("lat-")]
    say(
        f"latency: echo p50 {ms(stat(replies, 'p50')):.2f} ms, "
        f"p99 {ms(stat(replies, 'p99')):.2f} ms"
    )
    return Latencies(replies, acks)


def report(measured: Latencies, ceilings: Ceilings, celery: Peer | None = None) -> Result:
    """Echo and ack latency (ms) beside two raw round trips and one, and beside
    Celery's echo when it ran."""
    replies = measured.replies
    beside = [peer.echo("echo", w, replies, celery) for w in ("p50", "p99")] if celery else []
    return Result(
        "latency",
        figures=[
            two_round_trips("echo", "p50", replies, ceilings, Target("<=", 2.0)),
            two_round_trips("echo", "p99", replies, ceilings),
            two_round_trips("echo", "max", replies, ceilings),
            Figure(
                "ack p50",
                ms(stat(measured.acks, "p50")),
                "ms",
                ms(stat(ceilings.round_trips, "p50")),
                "raw round trip p50",
            ),
            *beside,
        ],
        settings={
            "actions": len(replies),
            "warmup_actions": WARMUP,
            "clients": 1,
            "measured": "user_action sent → agent message in_reply_to it received",
            "fleet": "1 gateway, 2 workers, 1 reaper",
        },
        series={"latency": replies},
    )
