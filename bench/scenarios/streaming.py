"""Streaming and stop: turns that stream 50 deltas a second, and stops of running turns.

- streaming: ``stream_conversations`` clients, half on each of two gateways, each
  asking for a reply the echo agent streams a word every 20 ms (50 deltas/s): frames
  delivered per second, the lag from the owner sending a frame to the client receiving
  it (both clocks are this machine's), and the CPU each frame costs every process.
- stop: ``stops`` turns stopped while they stream: from the stop's ack to the turn
  stopped (its ``turn_aborted`` logged by the owner; DESIGN: the turn is reached within
  200 ms, p99), and to that event arriving at the client.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.clients import Session, close_all, connect_all, create_all
from bench.context import Context
from bench.polling import until
from bench.progress import say
from bench.results import Figure, Result, Target, ms, stat
from fleet.harness import LocalFleet

WORD_DELAY = 0.02  # FLEET_ECHO_DELAY: 50 deltas a second
STOP_AFTER_FRAMES = 2


@dataclass(frozen=True, slots=True)
class Streamed:
    frames: int
    seconds: float
    lags: list[float]  # seconds from the owner's send to the client's receipt, per frame
    cpu_seconds: float  # every fleet process, RabbitMQ and Redis, over the run
    deltas: int


@dataclass(frozen=True, slots=True)
class Stops:
    reached: list[float]  # seconds from the stop's ack to the turn stopped (logged)
    latencies: list[float]  # ... to its turn_aborted received by the client


async def run(ctx: Context) -> list[Result]:
    env = {"FLEET_ECHO_DELAY": str(WORD_DELAY), "FLEET_WORKER_CAPACITY": "5000"}
    async with ctx.fleet("stream", **env) as fleet:
        urls = [(await fleet.gateway())[1], (await fleet.gateway())[1]]
        await asyncio.gather(fleet.worker(), fleet.worker(), fleet.reaper())
        streamed = await measure_streaming(ctx, fleet, urls)
        stops = await measure_stops(ctx, urls[0])
    return [report_streaming(streamed, ctx), report_stops(stops)]


async def measure_streaming(ctx: Context, fleet: LocalFleet, urls: list[str]) -> Streamed:
    plan = ctx.plan
    sessions = await create_all(urls[0], ctx.users(plan.users), plan.stream_conversations)
    for i, url in enumerate(urls):
        await connect_all(url, sessions[i :: len(urls)])
    words = " ".join(f"w{i}" for i in range(plan.stream_words))
    meter = ctx.cpu_meter(fleet)
    say(f"streaming: {len(sessions)} turns of {plan.stream_words} words at 50 words/s")
    try:
        meter.start()
        began = time.perf_counter()
        waiters = [s.expect(f"st-{i}") for i, s in enumerate(sessions)]
        await asyncio.gather(*(s.send(f"st-{i}", words) for i, s in enumerate(sessions)))
        await asyncio.wait_for(asyncio.gather(*waiters), 60 + 2 * plan.stream_words * WORD_DELAY)
        seconds = time.perf_counter() - began
        cpu = sum(meter.stop().values())
    finally:
        await close_all(sessions)
    frames = [(arrived, frame) for s in sessions for arrived, frame in s.frames]
    lags = [arrived - frame["ts"] for arrived, frame in frames]
    streamed = Streamed(len(frames), seconds, lags, cpu, len(sessions) * plan.stream_words)
    rate, lag = streamed.frames / seconds, ms(stat(lags, "p99"))
    say(f"streaming: {rate:,.0f} frames/s, lag p99 {lag:.1f} ms")
    return streamed


async def measure_stops(ctx: Context, url: str) -> Stops:
    plan = ctx.plan
    sessions = await create_all(url, ctx.users(plan.users), plan.stops)
    await connect_all(url, sessions)
    words = " ".join(f"w{i}" for i in range(plan.stream_words))
    try:
        timed = await asyncio.gather(*(_stop_one(s, i, words) for i, s in enumerate(sessions)))
    finally:
        await close_all(sessions)
    stops = Stops([reached for reached, _ in timed], [received for _, received in timed])
    say(
        f"stop: p99 {ms(stat(stops.reached, 'p99')):.1f} ms from ack to the turn stopped, "
        f"{ms(stat(stops.latencies, 'p99')):.1f} ms to turn_aborted received"
    )
    return stops


async def _stop_one(session: Session, index: int, words: str) -> tuple[float, float]:
    """Start a streaming turn, stop it once it streams; seconds from the stop's ack to
    the turn stopped (its turn_aborted logged by the owner), and to its arrival."""
    turn = f"sp-{index}"
    if not await session.send(turn, words):
        raise RuntimeError(f"{turn} refused: {session.refused[turn]}")

    async def streaming() -> bool:
        return session.streamed.get(turn, 0) >= STOP_AFTER_FRAMES

    async def aborted() -> bool:
        return turn in session.aborted

    await until(streaming, interval=0.005, timeout=30)
    if not await session.send(f"{turn}-stop", kind="stop"):
        raise RuntimeError(f"stop of {turn} refused")
    await until(aborted, interval=0.002, timeout=30)
    # Times taken when the ack and the event arrived, not when polled; the event's ts
    # is the owner's wall clock, on this machine.
    stop = f"{turn}-stop"
    # The ack waits for the broker's confirm, and the owner may stop the turn before
    # the ack reaches the client: that counts as 0, stopped by the time of the ack.
    reached = max(0.0, session.aborted_ts[turn] - session.acked_wall[stop])
    return reached, session.aborted[turn] - session.acked[stop]


def report_streaming(streamed: Streamed, ctx: Context) -> Result:
    rtt = ctx.ceilings.round_trips
    frames = max(1, streamed.frames)
    return Result(
        "streaming",
        figures=[
            Figure("frames delivered/s", streamed.frames / streamed.seconds, "frames/s"),
            Figure(
                "deltas per frame",
                streamed.deltas / frames,
                "deltas",
                None,
                "",
                Target(">=", 2.5),
            ),
            *(
                Figure(
                    f"frame lag {which}",
                    ms(stat(streamed.lags, which)),
                    "ms",
                    ms(stat(rtt, which)),
                    f"raw round trip {which}",
                )
                for which in ("p50", "p99")
            ),
            Figure("CPU per frame", ms(streamed.cpu_seconds / frames), "ms"),
        ],
        settings={
            "conversations": ctx.plan.stream_conversations,
            "words_per_turn": ctx.plan.stream_words,
            "deltas_per_second_per_turn": 1 / WORD_DELAY,
            "gateways": 2,
            "fleet": "2 gateways, 2 workers, 1 reaper, echo agent with FLEET_ECHO_DELAY",
            "lag": "frame ts (owner's clock) to arrival (client's clock), one machine",
            "cpu": "every fleet process, RabbitMQ and Redis, over the whole run",
        },
        series={"frame lag": streamed.lags},
    )


def report_stops(stops: Stops) -> Result:
    reached, latencies = stops.reached, stops.latencies
    return Result(
        "stop",
        figures=[
            Figure("ack → turn stopped p50", ms(stat(reached, "p50")), "ms"),
            Figure(
                "ack → turn stopped p99",
                ms(stat(reached, "p99")),
                "ms",
                None,
                "",
                Target("<=", 200.0),
            ),
            Figure("ack → turn_aborted received p50", ms(stat(latencies, "p50")), "ms"),
            Figure("ack → turn_aborted received p99", ms(stat(latencies, "p99")), "ms"),
            Figure("ack → turn_aborted received max", ms(stat(latencies, "max")), "ms"),
        ],
        settings={
            "stops": len(latencies),
            "measured": "stop acknowledged → turn stopped (turn_aborted logged: its ts, the "
            "owner's clock; 0 if before the ack arrived) and → turn_aborted received",
            "concurrent": True,
        },
        series={"stop": latencies},
    )
