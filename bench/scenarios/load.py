"""Offered load: latency at a fixed rate of half the fleet's own maximum.

Saturation hides latency: in the throughput scenario's closed loop every client
waits for its answer, so the latency there is mostly queueing. Here an open-loop
sender sends at a fixed rate, ``FRACTION`` of the answered rate the throughput
scenario measured in the same run, round-robin over as many conversations, whatever
the replies do. Latency runs from the moment each action was due, not from when it
went out, so a sender held up by a busy machine counts against the figure instead of
hiding the delay (coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench.accounting import Tally, tally
from bench.ceilings import two_round_trips
from bench.clients import Session, close_all, connect_all, create_all, settle
from bench.context import Context
from bench.progress import say
from bench.results import Figure, Result, Target, ms, stat
from fleet.harness import LocalFleet

FRACTION = 0.5
TARGET = Target("<=", 50.0)  # ms, p99 (issue 13)
REPLY_TIMEOUT = 30.0


@dataclass
class OpenLoop:
    """Seconds from each action's due time to its reply, and to its send."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (due, latency)
    refused: int = 0
    unanswered: int = 0


async def run(ctx: Context, fleet: LocalFleet, url: str, maximum: float) -> Result:
    """Send at ``FRACTION`` x ``maximum`` actions/s, then report the latency."""
    plan = ctx.plan
    rate = FRACTION * maximum
    sessions = await create_all(url, ctx.users(plan.users), plan.throughput_conversations)
    await connect_all(url, sessions)
    try:
        await asyncio.gather(*(s.ask(f"warm-{i}") for i, s in enumerate(sessions)))
        say(f"load: {rate:,.0f} actions/s offered ({FRACTION:.0%} of {maximum:,.0f}), open loop")
        measured = await _open_loop(sessions, rate, plan.load_seconds)
        await settle(sessions, timeout=REPLY_TIMEOUT)
        counted = await tally(sessions, ctx.redis, fleet.names, prefix="load-")
    finally:
        await close_all(sessions)
    say(
        f"load: p50 {ms(stat(measured.latencies, 'p50')):.1f} ms, "
        f"p99 {ms(stat(measured.latencies, 'p99')):.1f} ms"
    )
    return report(ctx, measured, counted, rate, maximum, len(sessions))


async def _open_loop(sessions: list[Session], rate: float, seconds: float) -> OpenLoop:
    """Action ``i`` is due ``i / rate`` seconds after the start, to session ``i % n``."""
    measured = OpenLoop()

    async def one(session: Session, action_id: str, due: float) -> None:
        waiter = session.expect(action_id)
        sent = await session.send(action_id)
        measured.lags.append(session.sent[action_id] - due)
        if not sent:
            waiter.cancel()
            measured.refused += 1
            return
        try:
            arrived = await asyncio.wait_for(waiter, REPLY_TIMEOUT)
            measured.latencies.append(arrived - due)
            measured.timeline.append((due - start, arrived - due))
        except TimeoutError:
            measured.unanswered += 1

    count = int(rate * seconds)
    start = time.perf_counter()
    async with asyncio.TaskGroup() as sends:
        for i in range(count):
            due = start + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            sends.create_task(one(sessions[i % len(sessions)], f"load-{i}", due))
    return measured


def report(
    ctx: Context, measured: OpenLoop, counted: Tally, rate: float, maximum: float, clients: int
) -> Result:
    """Latency at the offered rate, beside two raw round trips; the rate beside the maximum."""
    latencies = measured.latencies
    seconds = ctx.plan.load_seconds
    return Result(
        "load",
        figures=[
            Figure("offered", rate, "actions/s", maximum, "fleet's max (throughput)"),
            Figure("answered", len(latencies) / seconds, "actions/s", rate, "offered"),
            two_round_trips("latency at 50% load", "p50", latencies, ctx.ceilings),
            two_round_trips("latency at 50% load", "p99", latencies, ctx.ceilings, TARGET),
            two_round_trips("latency at 50% load", "max", latencies, ctx.ceilings),
            Figure("sender lag p99", ms(stat(measured.lags, "p99")), "ms"),
            Figure("lost + duplicated", len(counted.lost) + len(counted.duplicated), "actions"),
        ],
        settings={
            "fraction_of_max": FRACTION,
            "conversations": clients,
            "users": ctx.plan.users,
            "seconds": seconds,
            "sent": len(measured.lags),
            "refused": measured.refused,
            "unanswered": measured.unanswered,
            "measured": "due time (open loop, fixed rate) → agent message in_reply_to it received",
            "fleet": "1 gateway, 2 workers, 1 reaper (the throughput scenario's)",
            "lost": len(counted.lost),
            "duplicated": len(counted.duplicated),
        },
        series={"latency": latencies, "timeline": measured.timeline},
    )
