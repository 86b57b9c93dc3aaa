"""Failover (SIGKILL) and drain (SIGTERM) of a worker that owns every conversation.

One worker claims all N conversations; a second one and a reaper are up; every
conversation has a Socket.IO client sending background traffic. At the signal,
every client sends one probe action: a conversation's resume time (its pause, for a
drain) is from the signal until its probe's reply arrives — the time a user who
typed at that moment waits. All N probes at once is the worst case: the new owner
has N conversations to claim and N actions to answer at the same moment.

Then, on the same conversations, a third worker starts and the second is drained
(SIGTERM). Lost and duplicated actions are counted from acks, client replies and
the Redis log (see ``bench.accounting``).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from functools import partial

import aiohttp

from bench import polling
from bench.accounting import tally
from bench.clients import Session, bounded, close_all, connect_all, create, settle
from bench.context import Context
from bench.fleet import FleetProcess, LocalFleet, log_time
from bench.progress import say
from bench.results import Figure, Result, Target, percentile

LEAD = 2.0  # seconds of background traffic before the signal
TAIL = 1.0  # and after every probe was answered
RESUME_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0  # a drained worker still running after this is reported, then killed
LIVENESS_TTL = 1.0  # the fleet default (FLEET_LIVENESS_TTL), stated in the settings


@dataclass
class Traffic:
    """Open-loop background traffic while in the ``async with`` block: each client
    sends an action every ``interval`` seconds."""

    sessions: list[Session]
    prefix: str
    interval: float
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._run(s, i)) for i, s in enumerate(self.sessions)]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()  # each sender finishes the send in hand (bounded by its ack timeout)
        await asyncio.gather(*self._tasks)

    async def _run(self, session: Session, index: int) -> None:
        # Random phases spread the load evenly instead of in bursts.
        next_at = time.perf_counter() + random.uniform(0, self.interval)
        n = 0
        while not self._stop.is_set():
            delay = next_at - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            await session.send(f"{self.prefix}-bg-{index}-{n}")
            n += 1
            next_at += self.interval


async def _wait_owned(ctx: Context, fleet: LocalFleet, worker_id: str, count: int) -> float:
    """Seconds until ``worker_id`` owns ``count`` conversations (bounded)."""

    async def owned() -> bool:
        return int(await ctx.redis.scard(fleet.names.owns(worker_id))) >= count

    return await polling.until(owned, 0.05, ctx.plan.scenario_timeout)


@dataclass
class Move:
    """What one signal did to the conversations of the worker that got it."""

    resume: list[float]  # seconds from the signal until each probe was answered
    not_resumed: int  # probes still unanswered after RESUME_TIMEOUT
    claims: list[float]  # seconds from the signal until the new owner claimed each
    releases: list[float]  # ... until the drained owner released each (drain only)
    background: list[tuple[float, float]]  # (sent, latency) of background actions
    lost: int
    duplicated: int
    acked: int
    misordered: int
    unanswered: int
    exited_after: float | None  # the signalled worker's exit (drain only)
    signalled_wall: float  # time.time() of the signal, to place log lines


async def _exit_time(process: FleetProcess) -> float | None:
    """When ``process`` exited (``perf_counter``), or None if it did not in time."""
    code = await process.wait(EXIT_TIMEOUT)
    return time.perf_counter() if code is not None else None


async def _move(
    ctx: Context,
    fleet: LocalFleet,
    sessions: list[Session],
    prefix: str,
    owner: FleetProcess,
    heir: FleetProcess,
    sig: signal.Signals,
) -> Move:
    n = len(sessions)
    probe = f"{prefix}-probe"
    waiters = [s.expect(probe) for s in sessions]
    async with Traffic(sessions, prefix, interval=n / ctx.plan.failover_rate):
        await asyncio.sleep(LEAD)
        signalled = time.perf_counter()
        signalled_wall = time.time()
        owner.send(sig)
        async with asyncio.TaskGroup() as group:
            exited = group.create_task(_exit_time(owner))
            for session in sessions:
                group.create_task(session.send(probe))
            _, late = await asyncio.wait(waiters, timeout=RESUME_TIMEOUT)
            for waiter in late:
                waiter.cancel()
        exited_at = exited.result()
        await asyncio.sleep(TAIL)
    unanswered = await settle(sessions, timeout=30)
    counted = await tally(sessions, ctx.redis, fleet.names, prefix=prefix)
    claims = [log_time(line) - signalled_wall for line in heir.events("lease_claimed")]
    releases = [log_time(line) - signalled_wall for line in owner.events("lease_released")]
    background = [
        (s.sent[a] - signalled, s.replies[a][0] - s.sent[a])
        for s in sessions
        for a in s.acked
        if a.startswith(f"{prefix}-bg-") and a in s.replies
    ]
    return Move(
        resume=[w.result() - signalled for w in waiters if w not in late],
        not_resumed=len(late),
        claims=sorted(claims),
        releases=sorted(releases),
        background=background,
        lost=len(counted.lost),
        duplicated=len(counted.duplicated),
        acked=counted.acked,
        misordered=len(counted.misordered),
        unanswered=unanswered,
        exited_after=exited_at - signalled if exited_at is not None else None,
        signalled_wall=signalled_wall,
    )


async def run(ctx: Context) -> list[Result]:
    plan = ctx.plan
    n = plan.failover_conversations
    capacity = str(max(1000, 2 * n))
    settings: dict[str, object] = {
        "conversations": n,
        "clients": n,
        "users": plan.users,
        "background_rate": plan.failover_rate,
        "background_interval_s": round(n / plan.failover_rate, 3),
        "probe": "every client sends one action at the signal; resume = its reply arrival",
        "liveness_ttl_s": LIVENESS_TTL,
        "reaper_interval_s": 0.1,
        "worker_capacity": int(capacity),
    }
    results: list[Result] = []
    async with ctx.fleet("failover", FLEET_WORKER_CAPACITY=capacity) as fleet:
        _, url = await fleet.gateway()
        reaper = await fleet.reaper()
        victim, victim_id = await fleet.worker()
        tokens = ctx.users(plan.users)
        async with aiohttp.ClientSession() as http:
            cids = await bounded(
                20, [partial(create, http, url, tokens[i % len(tokens)]) for i in range(n)]
            )
        await _wait_owned(ctx, fleet, victim_id, n)
        survivor, survivor_id = await fleet.worker()
        sessions = [Session(cid, tokens[i % len(tokens)]) for i, cid in enumerate(cids)]
        await connect_all(url, sessions)
        try:
            await bounded(100, [partial(s.ask, "warm") for s in sessions])
            say(f"failover: {n} conversations on one worker, answering; SIGKILL under traffic")
            warned = fleet.warnings()
            killed = await _move(ctx, fleet, sessions, "fo", victim, survivor, signal.SIGKILL)
            reaped = [
                log_time(line) - killed.signalled_wall
                for line in reaper.events("worker_reaped")
                if line.get("worker_id") == victim_id
            ]
            owned = await ctx.redis.scard(fleet.names.owns(survivor_id))
            extra = {"owned_by_new_owner": owned, "fleet_warnings": dict(fleet.warnings() - warned)}
            results.append(_failover_result(ctx, killed, {**settings, **extra}, reaped))
            heir, heir_id = await fleet.worker()
            say(f"drain: SIGTERM the worker that now owns {owned} conversations")
            warned = fleet.warnings()
            drained = await _move(ctx, fleet, sessions, "dr", survivor, heir, signal.SIGTERM)
            owned = await ctx.redis.scard(fleet.names.owns(heir_id))
            extra = {"owned_by_new_owner": owned, "fleet_warnings": dict(fleet.warnings() - warned)}
            results.append(_drain_result(ctx, drained, {**settings, **extra}))
        finally:
            await close_all(sessions)
    return results


def _resume_figures(
    result: Result, move: Move, word: str, ceiling: float | None, label: str, p99: float
) -> None:
    """p50, p99 and max of the resume times; a probe never answered counts as the timeout."""
    censored = move.resume + [RESUME_TIMEOUT] * move.not_resumed
    result.add(Figure(f"{word} p50", percentile(censored, 0.5), "s", ceiling, label))
    result.add(
        Figure(f"{word} p99", percentile(censored, 0.99), "s", ceiling, label, Target("<=", p99))
    )
    result.add(Figure(f"{word} max", max(censored), "s", ceiling, label))
    if move.not_resumed:
        result.add(Figure(f"not answered in {RESUME_TIMEOUT:g} s", move.not_resumed, "conv"))
    if move.claims:
        result.add(Figure("claimed p99", percentile(move.claims, 0.99), "s", ceiling, label))
    result.add(Figure("lost", move.lost, "actions", target=Target("<=", 0)))
    result.add(Figure("duplicated", move.duplicated, "actions", target=Target("<=", 0)))
    result.settings.update(
        acked=move.acked, misordered=move.misordered, unanswered_after_settle=move.unanswered
    )
    result.series.update(resume=move.resume, claims=move.claims, background=move.background)
    say(
        f"{result.scenario}: {word} p50 {percentile(censored, 0.5):.2f} s, "
        f"p99 {percentile(censored, 0.99):.2f} s, lost {move.lost}, dup {move.duplicated}"
    )


def _failover_result(
    ctx: Context, move: Move, settings: dict[str, object], reaped: list[float]
) -> Result:
    """``reaped``: seconds from the kill until the reaper re-dispatched the victim's work."""
    n = len(move.resume) + move.not_resumed
    redeclare = ctx.ceilings.redeclare_rate
    ceiling = LIVENESS_TTL + n / redeclare if redeclare else None
    result = Result("failover", settings=settings)
    _resume_figures(result, move, "resume", ceiling, "liveness TTL + N / raw re-declare", 2.0)
    if reaped:
        result.add(Figure("reaped after", reaped[0], "s", LIVENESS_TTL, "liveness TTL"))
    return result


def _drain_result(ctx: Context, move: Move, settings: dict[str, object]) -> Result:
    n = len(move.resume) + move.not_resumed
    redeclare = ctx.ceilings.redeclare_rate
    ceiling = n / redeclare if redeclare else None
    result = Result("drain", settings=settings)
    label = "N / raw re-declare"
    _resume_figures(result, move, "pause", ceiling, label, 0.5)
    if move.releases:
        result.add(Figure("released all after", move.releases[-1], "s", ceiling, label))
    result.add(Figure("worker exited after", move.exited_after, "s"))
    if move.exited_after is None:
        result.settings["worker_exit"] = f"still running {EXIT_TIMEOUT:g} s after SIGTERM"
    return result
