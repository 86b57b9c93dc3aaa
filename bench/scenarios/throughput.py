"""Throughput: many clients, each with one action in flight, for a fixed window.

Closed loop: a client sends its next action as soon as the last one is answered, so
the fleet runs saturated and the latency under that load is measured too. CPU time
per action of every process (from /proc) shows where the time goes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bench import peer
from bench.accounting import Tally, tally
from bench.ceilings import Ceilings, two_round_trips
from bench.clients import Session, close_all, connect_all, create_all, settle
from bench.context import Context
from bench.peer import Peer
from bench.plan import Plan
from bench.procstat import CpuMeter
from bench.profile import Profiler
from bench.progress import say
from bench.results import Figure, Result, Target, ms, stat
from fleet.harness import LocalFleet

# Issue 13: every process's CPU per answered action at most half of the 3.7 ms measured.
CPU_TARGET = Target("<=", 1.85)


@dataclass
class Window:
    """The measured part of the loop: replies that arrived in it, and their latencies."""

    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    answered: int = 0


@dataclass(frozen=True, slots=True)
class Load:
    """What the closed loop measured, and what it cost."""

    clients: int
    seconds: float  # the window's length
    window: Window
    cpu: dict[str, float]  # CPU seconds each process used in the window
    counted: Tally  # every action of the loop, window or not
    warnings: dict[str, int]  # logged by the fleet meanwhile

    @property
    def rate(self) -> float:
        """Actions answered per second of the window."""
        return self.window.answered / self.seconds


async def run(ctx: Context, fleet: LocalFleet, url: str) -> Result:
    """Saturate the main fleet (profiled if the run profiles), then report the rate
    beside the raw broker's."""
    load = await measure(ctx, fleet, url, profiler=_profiler(ctx, fleet))
    return report(load, ctx.plan, ctx.ceilings, ctx.peer)


async def measure(
    ctx: Context,
    fleet: LocalFleet,
    url: str,
    redis: Redis | None = None,
    profiler: Profiler | None = None,
) -> Load:
    """A warm-up action per client, the closed loop, then the lost/duplicated tally
    (from the logs in ``redis``, the run's by default)."""
    plan = ctx.plan
    sessions = await create_all(url, ctx.users(plan.users), plan.throughput_conversations)
    await connect_all(url, sessions)
    warned = fleet.warnings()
    meter = ctx.cpu_meter(fleet)
    try:
        await asyncio.gather(*(s.ask(f"warm-{i}") for i, s in enumerate(sessions)))
        window, cpu = await closed_loop(sessions, plan, meter, profiler=profiler)
        await settle(sessions, timeout=30)
        counted = await tally(sessions, redis or ctx.redis, fleet.names, prefix="tp-")
    finally:
        await close_all(sessions)
    load = Load(
        clients=len(sessions),
        seconds=plan.throughput_seconds,
        window=window,
        cpu=cpu,
        counted=counted,
        warnings=dict(fleet.warnings() - warned),
    )
    say(
        f"throughput: {load.rate:,.0f} answered actions/s, "
        f"p99 {ms(stat(window.latencies, 'p99')):.1f} ms"
    )
    return load


async def closed_loop(
    sessions: list[Session],
    plan: Plan,
    meter: CpuMeter,
    prefix: str = "tp-",
    label: str = "throughput",
    profiler: Profiler | None = None,
) -> tuple[Window, dict[str, float]]:
    """Every client asks again once answered; the window after the warm-up, and its CPU.
    Action ids start with ``prefix``: a loop run again needs a new one (ids are deduped)."""
    stop = asyncio.Event()
    begins = time.perf_counter() + plan.throughput_warmup
    window = Window(begins, begins + plan.throughput_seconds)
    clients = len(sessions)
    say(f"{label}: {clients} clients, closed loop, {plan.throughput_seconds:.0f} s window")
    async with asyncio.TaskGroup() as loops:
        for i, session in enumerate(sessions):
            loops.create_task(_loop(session, f"{prefix}{i}-", stop, window))
        await asyncio.sleep(plan.throughput_warmup)
        meter.start()
        if profiler is not None:
            await profiler.start()
        await asyncio.sleep(plan.throughput_seconds)
        cpu = meter.stop()
        stop.set()  # each client finishes the action in hand
    if profiler is not None:
        await profiler.finish()
    return window, cpu


def _profiler(ctx: Context, fleet: LocalFleet) -> Profiler | None:
    """py-spy on the gateway and the first worker, when the run profiles."""
    if ctx.profile is None:
        return None
    running = {p.name: p.pid for p in fleet.processes if p.running}
    gateway = next(pid for name, pid in running.items() if name.startswith("gateway"))
    worker = next(pid for name, pid in running.items() if name.startswith("worker"))
    pids = {"gateway": gateway, "worker": worker}
    return Profiler(ctx.profile, ctx.workdir, pids, ctx.plan.throughput_seconds)


async def _loop(session: Session, prefix: str, stop: asyncio.Event, window: Window) -> None:
    """One client: ask, and once answered ask again, until ``stop``."""
    n = 0
    while not stop.is_set():
        action_id = f"{prefix}{n}"
        n += 1
        try:
            latency = await session.ask(action_id)
        except (RuntimeError, TimeoutError):
            continue  # counted by the tally as refused or lost
        arrived = session.replies[action_id][0]
        if window.start <= arrived < window.end:
            window.answered += 1
            window.latencies.append(latency)


def report(load: Load, plan: Plan, ceilings: Ceilings, celery: Peer | None = None) -> Result:
    """The answered rate beside raw publish→consume, latency under load, CPU per action;
    each beside Celery's with as many in flight, when it ran."""
    latencies = load.window.latencies
    counted = load.counted
    rate = [peer.rate(load.rate, celery)] if celery else []
    under = [peer.under_load(w, latencies, celery) for w in ("p50", "p99")] if celery else []
    return Result(
        "throughput",
        figures=[
            Figure(
                "answered actions/s",
                load.rate,
                "actions/s",
                ceilings.publish_consume_rate,
                "raw publish→consume",
                Target(">=", 0.40, "ratio"),
            ),
            *rate,
            two_round_trips("latency under load", "p50", latencies, ceilings),
            two_round_trips("latency under load", "p99", latencies, ceilings),
            *under,
            *_cpu_figures(load, ceilings, celery),
            Figure("lost + duplicated", len(counted.lost) + len(counted.duplicated), "actions"),
        ],
        settings={
            "conversations": load.clients,
            "clients": load.clients,
            "users": plan.users,
            "in_flight_per_client": 1,
            "window_s": plan.throughput_seconds,
            "warmup_s": plan.throughput_warmup,
            "fleet": "1 gateway, 2 workers, 1 reaper",
            "cpu_seconds_in_window": {k: round(v, 2) for k, v in load.cpu.items()},
            "acked": counted.acked,
            "lost": len(counted.lost),
            "duplicated": len(counted.duplicated),
            "misordered": len(counted.misordered),
            "fleet_warnings": load.warnings,
        },
        series={"latency": latencies},
    )


def _cpu_figures(load: Load, ceilings: Ceilings, celery: Peer | None) -> list[Figure]:
    """CPU time (ms) per answered action of each kind of process, and of all of them
    (beside Celery's per task)."""
    cpu = load.cpu
    answered = max(1, load.window.answered)
    by_kind = [
        ("gateway", sum(v for k, v in cpu.items() if k.startswith("gateway"))),
        ("workers", sum(v for k, v in cpu.items() if k.startswith("worker"))),
        ("bench clients", cpu.get("bench clients", 0.0)),
        ("redis", cpu.get("redis", 0.0)),
    ]
    figures = [Figure(f"CPU per action: {kind}", ms(s / answered), "ms") for kind, s in by_kind]
    if "rabbitmq" in cpu:
        raw = ceilings.broker_cpu_per_message
        figures.append(
            Figure(
                "CPU per action: rabbitmq",
                ms(cpu["rabbitmq"] / answered),
                "ms",
                ms(raw) if raw else None,
                "raw broker CPU per message",
            )
        )
    figures.append(
        Figure(
            "CPU per action: total",
            ms(sum(cpu.values()) / answered),
            "ms",
            ms(celery.cpu_per_task) if celery else None,
            "Celery CPU per task",
            CPU_TARGET,
        )
    )
    return figures
