"""The peer a user would pick instead of the fleet (Celery), measured in the same run,
and the rows that set the fleet's figures beside its own: ceiling = Celery's figure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.results import Figure, Stat, Target, ms, stat

# The goals: echo below Celery's, throughput at least 1.5x Celery's.
ECHO_TARGET = Target("<=", 1.0, "ratio")
RATE_TARGET = Target(">=", 1.5, "ratio")


@dataclass(frozen=True, slots=True)
class Peer:
    """What Celery did: sequential echo tasks, then a closed loop of many in flight."""

    round_trips: list[float]  # seconds per echo task, one after another
    rate: float  # tasks/s in the closed loop's window
    under_load: list[float]  # seconds per task in that window
    cpu_per_task: float  # seconds of CPU per task, every process (worker, client, servers)


def echo(name: str, which: Stat, latencies: Sequence[float], peer: Peer) -> Figure:
    """A fleet latency statistic (ms) beside Celery's sequential echo."""
    return Figure(
        f"{name} {which} vs Celery",
        ms(stat(latencies, which)),
        "ms",
        ms(stat(peer.round_trips, which)),
        f"Celery echo {which}",
        ECHO_TARGET if which == "p50" else None,
    )


def rate(value: float, peer: Peer) -> Figure:
    """The fleet's sustained rate beside Celery's with as many in flight."""
    return Figure(
        "answered actions/s vs Celery",
        value,
        "actions/s",
        peer.rate,
        "Celery tasks/s",
        RATE_TARGET,
    )


def under_load(which: Stat, latencies: Sequence[float], peer: Peer) -> Figure:
    return Figure(
        f"latency under load {which} vs Celery",
        ms(stat(latencies, which)),
        "ms",
        ms(stat(peer.under_load, which)),
        f"Celery under load {which}",
    )
