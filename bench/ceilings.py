"""What the raw broker and Redis do on this machine, measured in the same run.

- round trip: process A publishes (persistent, confirmed) to a queue, process B
  consumes it and publishes (persistent, confirmed) the answer, A consumes that.
- publish→consume: A publishes persistent messages with confirms, ``publish_window``
  in flight (like that many clients waiting for their acks); B consumes and acks each.
- ``SET NX``: one client awaiting each command, then pipelined in batches.
- declare+bind: durable queue declare then bind to a topic exchange, one channel,
  one after another (how the gateway and the worker declare a conversation's queue);
  again on the existing queues (a worker's claim re-declares), and over 8 channels.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)
from redis.asyncio import Redis

from bench import rabbit
from bench.plan import Plan
from bench.procstat import CpuMeter
from bench.progress import say
from bench.results import STATS, Figure, Result, Stat, Target, ms, stat

ROOT = Path(__file__).resolve().parent.parent


async def delete_queues(
    connection: AbstractConnection, queues: list[str], channels: int = 8
) -> None:
    """Delete queues over several channels at once: one channel runs one method at a time."""

    async def delete(part: list[str]) -> None:
        channel = await connection.channel()
        for name in part:
            await channel.queue_delete(name)
        await channel.close()

    await asyncio.gather(*(delete(queues[i::channels]) for i in range(channels)))


BODY = b'{"action_id":"0123456789abcdef","kind":"message","data":{"content":"' + b"x" * 48 + b'"}}'
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
HELPER_TIMEOUT = 30.0


@dataclass
class Ceilings:
    """What the raw broker and Redis did; every scenario's figures are held against these."""

    round_trips: list[float] = field(default_factory=list)  # seconds
    publish_consume_rate: float = 0.0  # messages/s, first publish to last consume
    publish_rate: float = 0.0  # confirmed publishes/s
    setnx_sequential_rate: float = 0.0
    setnx_pipelined_rate: float = 0.0
    declare_rate: float = 0.0  # new queue: declare + bind, one channel
    redeclare_rate: float = 0.0  # existing queue: declare + bind, one channel
    declare_parallel_rate: float = 0.0  # new queue, 8 channels
    queue_memory: float = 0.0  # bytes per idle durable queue
    broker_cpu_per_message: float | None = None  # seconds of broker CPU per publish→consume

    def result(self) -> Result:
        """The ceilings as rows of their own, with no ceiling or target of theirs."""
        cpu = self.broker_cpu_per_message
        return Result(
            "ceilings",
            figures=[
                *(
                    Figure(f"raw round trip {which}", ms(stat(self.round_trips, which)), "ms")
                    for which in STATS
                ),
                Figure("raw publish→consume", self.publish_consume_rate, "msg/s"),
                Figure("raw confirmed publish", self.publish_rate, "msg/s"),
                Figure("raw SET NX sequential", self.setnx_sequential_rate, "ops/s"),
                Figure("raw SET NX pipelined", self.setnx_pipelined_rate, "ops/s"),
                Figure("raw declare+bind (new)", self.declare_rate, "queues/s"),
                Figure("raw declare+bind (existing)", self.redeclare_rate, "queues/s"),
                Figure("raw declare+bind (8 channels)", self.declare_parallel_rate, "queues/s"),
                Figure("raw idle queue memory", self.queue_memory / 1024, "KiB"),
                Figure("raw broker CPU per message", None if cpu is None else ms(cpu), "ms"),
            ],
        )


def two_round_trips(
    name: str,
    which: Stat,
    latencies: Sequence[float],
    ceilings: Ceilings,
    target: Target | None = None,
) -> Figure:
    """A statistic of action latencies (ms) beside the same one of two raw round trips:
    an action crosses the broker twice, gateway → worker → gateway."""
    return Figure(
        f"{name} {which}",
        ms(stat(latencies, which)),
        "ms",
        2 * ms(stat(ceilings.round_trips, which)),
        f"2 x raw round trip {which}",
        target,
    )


class Helper:
    """``python -m bench.raw ...`` as a child process that says ``ready`` when consuming."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self._process: asyncio.subprocess.Process | None = None

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None, "use Helper as an async context manager"
        return self._process

    async def __aenter__(self) -> Helper:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.raw",
            *self.args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        if await self.line() != "ready":
            raise RuntimeError(f"bench.raw {self.args[0]} did not start")
        return self

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), HELPER_TIMEOUT)
        return raw.decode().strip()

    async def __aexit__(self, *_: object) -> None:
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def measure(
    plan: Plan, prefix: str, redis: Redis, amqp_url: str, broker_pid: int | None = None
) -> Ceilings:
    """Every ceiling; ``prefix`` names (and later deletes) what this creates."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            f"{prefix}.in", aio_pika.ExchangeType.TOPIC, durable=True
        )
        try:
            round_trips = await _round_trips(plan, prefix, amqp_url, channel, exchange)
            publishing = await _publish_consume(
                plan, prefix, amqp_url, channel, exchange, broker_pid
            )
            declaring = await _declares(plan, prefix, connection)
        finally:
            leftovers = await rabbit.queue_memory(f"{prefix}.")
            await delete_queues(connection, sorted(leftovers))
            await channel.exchange_delete(f"{prefix}.in")
    sequential, pipelined = await _setnx(plan, prefix, redis)
    return Ceilings(
        round_trips=round_trips,
        publish_consume_rate=publishing.consume_rate,
        publish_rate=publishing.publish_rate,
        setnx_sequential_rate=sequential,
        setnx_pipelined_rate=pipelined,
        declare_rate=declaring.new_rate,
        redeclare_rate=declaring.existing_rate,
        declare_parallel_rate=declaring.parallel_rate,
        queue_memory=declaring.queue_memory,
        broker_cpu_per_message=publishing.broker_cpu,
    )


async def _round_trips(
    plan: Plan,
    prefix: str,
    amqp_url: str,
    channel: AbstractChannel,
    exchange: AbstractExchange,
) -> list[float]:
    """Seconds per round trip through a second process, after a warm-up."""
    ping = await channel.declare_queue(f"{prefix}.ping", durable=True)
    await ping.bind(exchange, routing_key="ping")
    pong = await channel.declare_queue(f"{prefix}.pong", durable=True)
    answers: asyncio.Queue[float] = asyncio.Queue()

    async def on_pong(message: AbstractIncomingMessage) -> None:
        answers.put_nowait(time.perf_counter())
        await message.ack()

    round_trips: list[float] = []
    tag = await pong.consume(on_pong)
    async with Helper("echo", amqp_url, ping.name, pong.name):
        warmup = 100
        for i in range(warmup + plan.round_trips):
            sent = time.perf_counter()
            message = aio_pika.Message(BODY, delivery_mode=PERSISTENT)
            await exchange.publish(message, routing_key="ping", mandatory=True)
            arrived = await asyncio.wait_for(answers.get(), HELPER_TIMEOUT)
            if i >= warmup:
                round_trips.append(arrived - sent)
        await exchange.publish(aio_pika.Message(b"stop"), routing_key="ping")
    await pong.cancel(tag)
    say(
        f"ceilings: raw round trip p50 {ms(stat(round_trips, 'p50')):.2f} ms, "
        f"p99 {ms(stat(round_trips, 'p99')):.2f} ms"
    )
    return round_trips


@dataclass(frozen=True, slots=True)
class Publishing:
    publish_rate: float  # confirmed publishes/s
    consume_rate: float  # messages/s, first publish to last consume
    broker_cpu: float | None  # seconds of broker CPU per message, if its pid is known


async def _publish_consume(
    plan: Plan,
    prefix: str,
    amqp_url: str,
    channel: AbstractChannel,
    exchange: AbstractExchange,
    broker_pid: int | None,
) -> Publishing:
    """Persistent, confirmed publishes, ``publish_window`` in flight, to a consuming process."""
    broker = CpuMeter({"broker": broker_pid} if broker_pid else {})
    broker.start()
    queue = await channel.declare_queue(f"{prefix}.sink", durable=True)
    await queue.bind(exchange, routing_key="sink")
    count = plan.published
    async with Helper("sink", amqp_url, queue.name, str(count)) as helper:
        per_publisher = count // plan.publish_window

        async def publisher(n: int) -> None:
            for _ in range(n):
                message = aio_pika.Message(BODY, delivery_mode=PERSISTENT)
                await exchange.publish(message, routing_key="sink", mandatory=True)

        extra = count - per_publisher * plan.publish_window
        started = time.monotonic()
        await asyncio.gather(
            *(publisher(per_publisher + (i < extra)) for i in range(plan.publish_window))
        )
        published = time.monotonic()
        report = orjson.loads(await helper.line())
    publishing = Publishing(
        publish_rate=count / (published - started),
        consume_rate=report["count"] / (report["last"] - started),
        broker_cpu=broker.stop()["broker"] / count if broker_pid else None,
    )
    say(f"ceilings: raw publish→consume {publishing.consume_rate:,.0f} msg/s")
    return publishing


@dataclass(frozen=True, slots=True)
class Declaring:
    new_rate: float  # queues/s, declare + bind, one channel
    existing_rate: float  # the same queues again
    parallel_rate: float  # new queues over 8 channels
    queue_memory: float  # bytes per idle durable queue


async def _declares(plan: Plan, prefix: str, connection: AbstractConnection) -> Declaring:
    """Durable queue declare + bind, one after another: new queues, the same again, then
    new ones over 8 channels."""
    channel = await connection.channel()
    exchange = f"{prefix}.in"
    names = [f"{prefix}.q.{i}" for i in range(plan.declared)]

    async def declare_all(chan: AbstractChannel, part: list[str]) -> None:
        for name in part:
            queue = await chan.declare_queue(name, durable=True)
            await queue.bind(exchange, routing_key=name)

    started = time.monotonic()
    await declare_all(channel, names)
    new_rate = len(names) / (time.monotonic() - started)
    started = time.monotonic()
    await declare_all(channel, names)
    existing_rate = len(names) / (time.monotonic() - started)
    memory = await rabbit.queue_memory(f"{prefix}.q.")
    await delete_queues(connection, names)

    channels = [await connection.channel() for _ in range(8)]
    parallel = [f"{prefix}.p.{i}" for i in range(plan.declared)]
    started = time.monotonic()
    await asyncio.gather(*(declare_all(c, parallel[i::8]) for i, c in enumerate(channels)))
    parallel_rate = len(parallel) / (time.monotonic() - started)
    await delete_queues(connection, parallel)
    for c in channels:
        await c.close()
    await channel.close()
    say(
        f"ceilings: raw declare+bind {new_rate:,.0f} queues/s "
        f"(existing {existing_rate:,.0f}, 8 channels {parallel_rate:,.0f})"
    )
    return Declaring(
        new_rate=new_rate,
        existing_rate=existing_rate,
        parallel_rate=parallel_rate,
        queue_memory=sum(memory.values()) / max(1, len(memory)),
    )


async def _setnx(plan: Plan, prefix: str, redis: Redis) -> tuple[float, float]:
    """``SET NX`` per second: awaiting each command, then pipelined in batches."""
    key = f"{prefix}:setnx:"
    started = time.monotonic()
    for i in range(plan.setnx_sequential):
        await redis.set(f"{key}s{i}", "1", nx=True)
    sequential = plan.setnx_sequential / (time.monotonic() - started)
    started = time.monotonic()
    for first in range(0, plan.setnx_pipelined, plan.setnx_batch):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + plan.setnx_batch, plan.setnx_pipelined)):
                pipe.set(f"{key}p{i}", "1", nx=True)
            await pipe.execute()
    pipelined = plan.setnx_pipelined / (time.monotonic() - started)
    made = [f"{key}s{i}" for i in range(plan.setnx_sequential)]
    made += [f"{key}p{i}" for i in range(plan.setnx_pipelined)]
    for first in range(0, len(made), 5000):
        await redis.unlink(*made[first : first + 5000])
    say(
        f"ceilings: raw SET NX {sequential:,.0f} ops/s sequential, {pipelined:,.0f} ops/s pipelined"
    )
    return sequential, pipelined
