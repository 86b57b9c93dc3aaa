"""How big each measurement is: the full run and the quick one (``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool = False
    # ceilings
    round_trips: int = 2000
    published: int = 30_000
    publish_window: int = 64  # confirms outstanding at once, like that many waiting clients
    setnx_sequential: int = 5000
    setnx_pipelined: int = 100_000
    setnx_batch: int = 1000
    declared: int = 500
    # scenarios
    latency_actions: int = 1000
    throughput_conversations: int = 100
    throughput_seconds: float = 30.0
    throughput_warmup: float = 3.0
    load_seconds: float = 20.0  # open loop at half the maximum
    users: int = 10
    start_conversations: int = 600
    start_concurrency: int = 32
    failover_conversations: int = 1000
    failover_rate: float = 150.0  # background actions/s over all conversations
    stream_conversations: int = 100
    stream_words: int = 150  # at 50 a second: 3 s of streaming per conversation
    stops: int = 100
    timers: int = 10_000
    timer_conversations: int = 200
    timer_window: float = 60.0  # seconds over which the timers fall due
    completions: int = 1000  # pairs: through the fleet, and straight to the fake LLM
    scale_conversations: int = 10_000
    heartbeat_window: float = 10.0
    growth_sizes: tuple[int, ...] = (1000, 2000, 4000)  # idle conversations, beside 100 active
    growth_window: float = 8.0
    scenario_timeout: float = 300.0

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(
            quick=True,
            round_trips=500,
            published=10_000,
            setnx_sequential=2000,
            setnx_pipelined=20_000,
            declared=200,
            latency_actions=200,
            throughput_seconds=5.0,
            throughput_warmup=1.0,
            load_seconds=5.0,
            start_conversations=150,
            failover_conversations=200,
            scale_conversations=2000,
            stream_conversations=30,
            stream_words=100,
            stops=30,
            timers=1000,
            timer_conversations=50,
            timer_window=10.0,
            completions=200,
            heartbeat_window=4.0,
            growth_sizes=(125, 250, 500),
            growth_window=2.0,
            scenario_timeout=120.0,
        )
