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

from bench import polling
from bench.accounting import owned_by, tally
from bench.ceilings import Ceilings
from bench.clients import Session, bounded, close_all, connect_all, create_all, settle
from bench.context import Context
from bench.plan import Plan
from bench.progress import say
from bench.results import STATS, Figure, Result, Target, stat
from broker.leases import Leases
from fleet.harness import FleetProcess, LocalFleet, log_time

LEAD = 2.0  # seconds of background traffic before the signal
TAIL = 1.0  # and after every probe was answered
RESUME_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0  # a drained worker still running after this is reported, then killed
LIVENESS_TTL = 1.0  # the fleet default (FLEET_LIVENESS_TTL), stated in the settings


@dataclass(frozen=True, slots=True)
class Move:
    """What one signal did to the conversations of the worker that got it."""

    resume: list[float]  # seconds from the signal until each probe was answered
    not_resumed: int  # probes still unanswered after RESUME_TIMEOUT
    claims: list[float]  # seconds from the signal until the new owner claimed each
    # seconds each took no input: from its owner stopping (the signal, for a kill) until
    # the new owner consumed its queue; read from both workers' logs
    unavailable: list[float]
    releases: list[float]  # ... until the drained owner released each (drain only)
    background: list[tuple[float, float]]  # (sent, latency) of background actions
    lost: int
    duplicated: int
    acked: int
    misordered: int
    unanswered: int
    exited_after: float | None  # the signalled worker's exit (drain only)
    signalled_wall: float  # time.time() of the signal, to place log lines
    owned_by_heir: int  # conversations the new owner holds afterwards
    warnings: dict[str, int]  # logged by the fleet meanwhile

    @property
    def censored(self) -> list[float]:
        """Resume times, where a probe never answered counts as the timeout."""
        return self.resume + [RESUME_TIMEOUT] * self.not_resumed

    def summary(self, word: str) -> str:
        """One progress line: ``word`` (resume, pause) p50 and p99, lost and duplicated."""
        censored = self.censored
        return (
            f"{word} p50 {stat(censored, 'p50'):.2f} s, p99 {stat(censored, 'p99'):.2f} s, "
            f"lost {self.lost}, dup {self.duplicated}"
        )


@dataclass(frozen=True, slots=True)
class Failover:
    """A kill, then a drain, of the worker owning every conversation."""

    conversations: int
    killed: Move
    reaped: list[float]  # seconds from the kill until the reaper re-dispatched the work
    drained: Move


async def run(ctx: Context) -> list[Result]:
    """Kill, then drain, a worker under traffic; a result for each."""
    return report(await measure(ctx), ctx.plan, ctx.ceilings)


async def measure(ctx: Context) -> Failover:
    """One worker claims every conversation; SIGKILL it (a second one takes over), then
    start a third and SIGTERM the second."""
    plan = ctx.plan
    n = plan.failover_conversations
    async with ctx.fleet("failover", FLEET_WORKER_CAPACITY=str(_capacity(n))) as fleet:
        _, url = await fleet.gateway()
        reaper = await fleet.reaper()
        victim, victim_id = await fleet.worker()
        sessions = await create_all(url, ctx.users(plan.users), n)
        await _wait_owned(ctx, fleet, victim_id, n)
        survivor, survivor_id = await fleet.worker()
        await connect_all(url, sessions)
        try:
            await bounded(100, [partial(s.ask, "warm") for s in sessions])
            say(f"failover: {n} conversations on one worker, answering; SIGKILL under traffic")
            killed = await _move(
                ctx, fleet, sessions, "fo", victim, survivor, survivor_id, signal.SIGKILL
            )
            say(f"failover: {killed.summary('resume')}")
            reaped = [
                log_time(line) - killed.signalled_wall
                for line in reaper.events("worker_reaped")
                if line.get("worker_id") == victim_id
            ]
            heir, heir_id = await fleet.worker()
            say(f"drain: SIGTERM the worker that now owns {killed.owned_by_heir} conversations")
            drained = await _move(
                ctx, fleet, sessions, "dr", survivor, heir, heir_id, signal.SIGTERM
            )
            say(f"drain: {drained.summary('pause')}")
        finally:
            await close_all(sessions)
    return Failover(n, killed, reaped, drained)


def _capacity(conversations: int) -> int:
    """Every worker can take all the conversations at once."""
    return max(1000, 2 * conversations)


async def _wait_owned(ctx: Context, fleet: LocalFleet, worker_id: str, count: int) -> float:
    """Seconds until ``worker_id`` owns ``count`` conversations (bounded)."""

    async def owned() -> bool:
        return len(await owned_by(ctx.redis, fleet.names, worker_id)) >= count

    return await polling.until(owned, 0.05, ctx.plan.scenario_timeout)


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
    heir_id: str,
    sig: signal.Signals,
) -> Move:
    """Send ``sig`` to ``owner`` under background traffic, and a probe from every client."""
    n = len(sessions)
    warned = fleet.warnings()
    probe = f"{prefix}-probe"
    waiters = [s.expect(probe) for s in sessions]
    async with Traffic(sessions, prefix, interval=n / ctx.plan.failover_rate):
        await asyncio.sleep(LEAD)
        signalled = time.perf_counter()
        signalled_wall = time.time()
        owner.signal(sig)
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
    consuming: dict[str, float] = {}  # when the heir first consumed each queue
    for line in heir.events("consuming"):
        if (at := log_time(line)) >= signalled_wall:
            consuming.setdefault(line["conversation_id"], at)
    if sig == signal.SIGTERM:  # each stopped taking input as its turn to move came
        stopped = {
            line["conversation_id"]: line["stopped_at"] for line in owner.events("lease_released")
        }
    else:  # all at once
        stopped = dict.fromkeys(consuming, signalled_wall)
    unavailable = [at - stopped[cid] for cid, at in consuming.items() if stopped.get(cid)]
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
        unavailable=sorted(unavailable),
        releases=sorted(releases),
        background=background,
        lost=len(counted.lost),
        duplicated=len(counted.duplicated),
        acked=counted.acked,
        misordered=len(counted.misordered),
        unanswered=unanswered,
        exited_after=exited_at - signalled if exited_at is not None else None,
        signalled_wall=signalled_wall,
        owned_by_heir=len(await Leases(ctx.redis, fleet.names).owned_by(heir_id)),
        warnings=dict(fleet.warnings() - warned),
    )


def report(measured: Failover, plan: Plan, ceilings: Ceilings) -> list[Result]:
    """Resume and pause times beside what re-declaring every queue takes, raw."""
    n = measured.conversations
    settings: dict[str, object] = {
        "conversations": n,
        "clients": n,
        "users": plan.users,
        "background_rate": plan.failover_rate,
        "background_interval_s": round(n / plan.failover_rate, 3),
        "probe": "every client sends one action at the signal; resume = its reply arrival",
        "liveness_ttl_s": LIVENESS_TTL,
        "reaper_interval_s": 0.1,
        "worker_capacity": _capacity(n),
    }
    redeclare = ceilings.redeclare_rate
    every_queue = n / redeclare if redeclare else None  # seconds to re-declare N queues, raw
    after_ttl = None if every_queue is None else LIVENESS_TTL + every_queue
    return [
        _failover_result(measured, settings, after_ttl),
        _drain_result(measured.drained, settings, every_queue),
    ]


def _failover_result(
    measured: Failover, settings: dict[str, object], ceiling: float | None
) -> Result:
    """``ceiling``: the liveness TTL, then re-declaring every queue."""
    label = "liveness TTL + N / raw re-declare"
    result = _move_result("failover", measured.killed, settings, "resume", ceiling, label, 2.0)
    if measured.reaped:
        result.add(Figure("reaped after", measured.reaped[0], "s", LIVENESS_TTL, "liveness TTL"))
    return result


def _drain_result(move: Move, settings: dict[str, object], ceiling: float | None) -> Result:
    """``ceiling``: re-declaring every queue."""
    label = "N / raw re-declare"
    result = _move_result("drain", move, settings, "pause", ceiling, label, 0.5)
    if move.releases:
        result.add(Figure("released all after", move.releases[-1], "s", ceiling, label))
    result.add(Figure("worker exited after", move.exited_after, "s"))
    if move.exited_after is None:
        result.settings["worker_exit"] = f"still running {EXIT_TIMEOUT:g} s after SIGTERM"
    return result


def _move_result(
    scenario: str,
    move: Move,
    settings: dict[str, object],
    word: str,
    ceiling: float | None,
    label: str,
    p99: float,
) -> Result:
    """p50, p99 and max of the resume (or pause) and unavailable times, claims, lost
    and duplicated actions; ``p99`` is the target of both p99s."""

    def spread(name: str, seconds: list[float]) -> list[Figure]:
        return [
            Figure(
                f"{name} {which}",
                stat(seconds, which),
                "s",
                ceiling,
                label,
                Target("<=", p99) if which == "p99" else None,
            )
            for which in STATS
        ]

    figures = spread(word, move.censored)
    if move.not_resumed:
        figures.append(Figure(f"not answered in {RESUME_TIMEOUT:g} s", move.not_resumed, "conv"))
    if move.claims:
        figures.append(Figure("claimed p99", stat(move.claims, "p99"), "s", ceiling, label))
    if move.unavailable:
        figures += spread("unavailable", move.unavailable)
    figures.append(Figure("unavailable measured", len(move.unavailable), "conv"))
    figures.append(Figure("lost", move.lost, "actions", target=Target("<=", 0)))
    figures.append(Figure("duplicated", move.duplicated, "actions", target=Target("<=", 0)))
    return Result(
        scenario,
        figures=figures,
        settings={
            **settings,
            "owned_by_new_owner": move.owned_by_heir,
            "fleet_warnings": move.warnings,
            "acked": move.acked,
            "misordered": move.misordered,
            "unanswered_after_settle": move.unanswered,
        },
        series={
            "resume": move.resume,
            "claims": move.claims,
            "unavailable": move.unavailable,
            "background": move.background,
        },
    )
