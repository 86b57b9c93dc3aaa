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
from dataclasses import dataclass, field

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from redis.asyncio import Redis

from bench import rabbit
from bench.cleanup import delete_queues
from bench.fleet import ROOT
from bench.plan import Plan
from bench.procstat import CpuMeter
from bench.progress import say
from bench.results import Figure, Result, percentile

BODY = b'{"action_id":"0123456789abcdef","kind":"message","data":{"content":"' + b"x" * 48 + b'"}}'
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
HELPER_TIMEOUT = 30.0


@dataclass
class Ceilings:
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

    @property
    def rtt_p50(self) -> float:
        return percentile(self.round_trips, 0.5)

    @property
    def rtt_p99(self) -> float:
        return percentile(self.round_trips, 0.99)

    def result(self) -> Result:
        ms = 1000.0
        result = Result("ceilings")
        for name, value, unit in [
            ("raw round trip p50", self.rtt_p50 * ms, "ms"),
            ("raw round trip p99", self.rtt_p99 * ms, "ms"),
            ("raw round trip max", max(self.round_trips) * ms, "ms"),
            ("raw publish→consume", self.publish_consume_rate, "msg/s"),
            ("raw confirmed publish", self.publish_rate, "msg/s"),
            ("raw SET NX sequential", self.setnx_sequential_rate, "ops/s"),
            ("raw SET NX pipelined", self.setnx_pipelined_rate, "ops/s"),
            ("raw declare+bind (new)", self.declare_rate, "queues/s"),
            ("raw declare+bind (existing)", self.redeclare_rate, "queues/s"),
            ("raw declare+bind (8 channels)", self.declare_parallel_rate, "queues/s"),
            ("raw idle queue memory", self.queue_memory / 1024, "KiB"),
            ("raw broker CPU per message", _ms(self.broker_cpu_per_message), "ms"),
        ]:
            result.add(Figure(name, value, unit))
        return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


class Helper:
    """``python -m bench.raw ...`` as a child process that says ``ready`` when consuming."""

    def __init__(self, *args: str) -> None:
        self.args = args

    async def __aenter__(self) -> Helper:
        self.process = await asyncio.create_subprocess_exec(
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
    ceilings = Ceilings()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            f"{prefix}.in", aio_pika.ExchangeType.TOPIC, durable=True
        )
        try:
            await _round_trips(plan, prefix, amqp_url, channel, exchange, ceilings)
            say(
                f"ceilings: raw round trip p50 {ceilings.rtt_p50 * 1000:.2f} ms, "
                f"p99 {ceilings.rtt_p99 * 1000:.2f} ms"
            )
            broker = CpuMeter({"broker": broker_pid} if broker_pid else {})
            broker.start()
            await _publish_consume(plan, prefix, amqp_url, channel, exchange, ceilings)
            if broker_pid:
                ceilings.broker_cpu_per_message = broker.stop()["broker"] / plan.published
            say(f"ceilings: raw publish→consume {ceilings.publish_consume_rate:,.0f} msg/s")
            await _declares(plan, prefix, connection, ceilings)
            say(
                f"ceilings: raw declare+bind {ceilings.declare_rate:,.0f} queues/s "
                f"(existing {ceilings.redeclare_rate:,.0f}, 8 channels "
                f"{ceilings.declare_parallel_rate:,.0f})"
            )
        finally:
            leftovers = await rabbit.queue_memory(f"{prefix}.")
            await delete_queues(connection, sorted(leftovers))
            await channel.exchange_delete(f"{prefix}.in")
    await _setnx(plan, prefix, redis, ceilings)
    say(
        f"ceilings: raw SET NX {ceilings.setnx_sequential_rate:,.0f} ops/s sequential, "
        f"{ceilings.setnx_pipelined_rate:,.0f} ops/s pipelined"
    )
    return ceilings


async def _round_trips(
    plan: Plan,
    prefix: str,
    amqp_url: str,
    channel: AbstractChannel,
    exchange: aio_pika.abc.AbstractExchange,
    ceilings: Ceilings,
) -> None:
    ping = await channel.declare_queue(f"{prefix}.ping", durable=True)
    await ping.bind(exchange, routing_key="ping")
    pong = await channel.declare_queue(f"{prefix}.pong", durable=True)
    answers: asyncio.Queue[float] = asyncio.Queue()

    async def on_pong(message: AbstractIncomingMessage) -> None:
        answers.put_nowait(time.perf_counter())
        await message.ack()

    tag = await pong.consume(on_pong)
    async with Helper("echo", amqp_url, ping.name, pong.name):
        warmup = 100
        for i in range(warmup + plan.round_trips):
            sent = time.perf_counter()
            message = aio_pika.Message(BODY, delivery_mode=PERSISTENT)
            await exchange.publish(message, routing_key="ping", mandatory=True)
            arrived = await asyncio.wait_for(answers.get(), HELPER_TIMEOUT)
            if i >= warmup:
                ceilings.round_trips.append(arrived - sent)
        await exchange.publish(aio_pika.Message(b"stop"), routing_key="ping")
    await pong.cancel(tag)


async def _publish_consume(
    plan: Plan,
    prefix: str,
    amqp_url: str,
    channel: AbstractChannel,
    exchange: aio_pika.abc.AbstractExchange,
    ceilings: Ceilings,
) -> None:
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
    ceilings.publish_rate = count / (published - started)
    ceilings.publish_consume_rate = report["count"] / (report["last"] - started)


async def _declares(
    plan: Plan, prefix: str, connection: AbstractConnection, ceilings: Ceilings
) -> None:
    channel = await connection.channel()
    exchange = f"{prefix}.in"
    names = [f"{prefix}.q.{i}" for i in range(plan.declared)]

    async def declare_all(chan: AbstractChannel, part: list[str]) -> None:
        for name in part:
            queue = await chan.declare_queue(name, durable=True)
            await queue.bind(exchange, routing_key=name)

    started = time.monotonic()
    await declare_all(channel, names)
    ceilings.declare_rate = len(names) / (time.monotonic() - started)
    started = time.monotonic()
    await declare_all(channel, names)
    ceilings.redeclare_rate = len(names) / (time.monotonic() - started)
    memory = await rabbit.queue_memory(f"{prefix}.q.")
    ceilings.queue_memory = sum(memory.values()) / max(1, len(memory))
    await delete_queues(connection, names)

    channels = [await connection.channel() for _ in range(8)]
    parallel = [f"{prefix}.p.{i}" for i in range(plan.declared)]
    started = time.monotonic()
    await asyncio.gather(*(declare_all(c, parallel[i::8]) for i, c in enumerate(channels)))
    ceilings.declare_parallel_rate = len(parallel) / (time.monotonic() - started)
    await delete_queues(connection, parallel)
    for c in channels:
        await c.close()
    await channel.close()


async def _setnx(plan: Plan, prefix: str, redis: Redis, ceilings: Ceilings) -> None:
    key = f"{prefix}:setnx:"
    started = time.monotonic()
    for i in range(plan.setnx_sequential):
        await redis.set(f"{key}s{i}", "1", nx=True)
    ceilings.setnx_sequential_rate = plan.setnx_sequential / (time.monotonic() - started)
    started = time.monotonic()
    for first in range(0, plan.setnx_pipelined, plan.setnx_batch):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + plan.setnx_batch, plan.setnx_pipelined)):
                pipe.set(f"{key}p{i}", "1", nx=True)
            await pipe.execute()
    ceilings.setnx_pipelined_rate = plan.setnx_pipelined / (time.monotonic() - started)
    made = [f"{key}s{i}" for i in range(plan.setnx_sequential)]
    made += [f"{key}p{i}" for i in range(plan.setnx_pipelined)]
    for first in range(0, len(made), 5000):
        await redis.unlink(*made[first : first + 5000])
