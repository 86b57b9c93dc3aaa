"""Timers: ``plan.timers`` reminders (the echo agent's ``/remind``), sent through a
gateway over ``plan.timer_conversations`` conversations and due at random times within
``plan.timer_window`` seconds, a minute in a full run (DESIGN: a timer fires at most
250 ms late, p99).

Lateness is from a timer's due time (``at``) to its owner logging it as fired (the
event's ``ts``): the reaper's sweep, the queue, the owner's append. Every timer must be
logged exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from functools import partial

import orjson

from bench.clients import bounded, close_all, connect_all, create_all
from bench.context import Context
from bench.polling import until
from bench.progress import say
from bench.results import Figure, Result, Target, ms, stat
from broker.names import Names

SEND_RATE = 200.0  # reminders/s we expect to schedule at least: the lead before the window


@dataclass(frozen=True, slots=True)
class Fired:
    lateness: list[float]  # seconds from due to logged, per timer logged
    scheduled: int
    duplicates: int  # timers logged more than once (must be 0)


async def run(ctx: Context) -> list[Result]:
    async with ctx.fleet("timers") as fleet:
        url = (await fleet.gateway())[1]
        await asyncio.gather(fleet.worker(), fleet.worker(), fleet.reaper())
        fired = await measure(ctx, url, fleet.names)
    return [report(fired, ctx)]


async def measure(ctx: Context, url: str, names: Names) -> Fired:
    plan = ctx.plan
    sessions = await create_all(url, ctx.users(plan.users), plan.timer_conversations)
    await connect_all(url, sessions)
    lead = plan.timers / SEND_RATE + 5.0
    window_start = time.time() + lead
    rng = random.Random(7)
    window = plan.timer_window
    # Sent in the order they fall due: a send that overruns the lead delays only the
    # last timers' scheduling, never a timer already due.
    due = sorted(window_start + rng.uniform(0, window) for _ in range(plan.timers))
    say(f"timers: scheduling {plan.timers} due within {window:.0f} s, from {lead:.0f} s on")

    async def remind(i: int) -> bool:
        session = sessions[i % len(sessions)]
        seconds = max(0.0, due[i] - time.time())
        return await session.send(f"tm-{i}", f"/remind {seconds:.3f} t{i}")

    try:
        acked = await bounded(64, [partial(remind, i) for i in range(plan.timers)])
        if not all(acked):
            raise RuntimeError(f"{acked.count(False)} reminders were not acknowledged")
        if time.time() > window_start:
            say("timers: scheduling took longer than the lead; the first ones were due already")

        async def all_fired() -> bool:
            return await ctx.redis.zcard(names.due(0)) == 0

        await asyncio.sleep(max(0.0, window_start + window - time.time()))  # they fall due
        await until(all_fired, interval=0.2, timeout=60)
    finally:
        await close_all(sessions)
    seen: dict[str, int] = {}
    lateness = []
    for session in sessions:
        async with asyncio.timeout(60):
            while True:  # the last ones may be queued still: poll their logs until logged
                timers = await _timers_logged(ctx, names, session.cid)
                if len(timers) >= len([a for a in session.acked if a.startswith("tm-")]):
                    break
                await asyncio.sleep(0.2)
        for timer in timers:
            seen[timer.timer_id] = seen.get(timer.timer_id, 0) + 1
            lateness.append(timer.ts - timer.at)
    duplicates = sum(1 for count in seen.values() if count > 1)
    say(f"timers: {len(seen)} fired, late p99 {ms(stat(lateness, 'p99')):.1f} ms")
    return Fired(lateness, plan.timers, duplicates)


@dataclass(frozen=True, slots=True)
class Logged:
    timer_id: str
    at: float
    ts: float


async def _timers_logged(ctx: Context, names: Names, cid: str) -> list[Logged]:
    found = []
    for raw in await ctx.redis.lrange(names.log(cid), 0, -1):
        event = orjson.loads(raw)
        if event["kind"] == "timer":
            data = event["data"]
            found.append(Logged(data["timer_id"], data["at"], event["ts"]))
    return found


def report(fired: Fired, ctx: Context) -> Result:
    rtt = ctx.ceilings.round_trips
    late = fired.lateness
    return Result(
        "timers",
        figures=[
            Figure(
                "late p50", ms(stat(late, "p50")), "ms", ms(stat(rtt, "p50")), "raw round trip p50"
            ),
            Figure(
                "late p99",
                ms(stat(late, "p99")),
                "ms",
                ms(stat(rtt, "p99")),
                "raw round trip p99",
                Target("<=", 250.0),
            ),
            Figure("late max", ms(stat(late, "max")), "ms"),
            Figure("fired", len(late), "timers", None, "", Target(">=", fired.scheduled)),
            Figure("fired twice", fired.duplicates, "timers", None, "", Target("<=", 0)),
        ],
        settings={
            "timers": fired.scheduled,
            "conversations": ctx.plan.timer_conversations,
            "window_seconds": ctx.plan.timer_window,
            "fleet": "1 gateway, 2 workers, 1 reaper (sweeping every 100 ms), echo agent /remind",
            "late": "due time → the owner logs the timer event (both this machine's clock)",
        },
        series={"timer lateness": late},
    )
