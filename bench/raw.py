"""The second process of the broker ceilings (a round trip needs two processes).

    python -m bench.raw echo URL PING PONG    answer each message on PING with one on PONG
    python -m bench.raw sink URL QUEUE COUNT  consume and ack COUNT messages, print timings

Both print ``ready`` once consuming. ``echo`` stops at a message whose body is ``stop``;
``sink`` prints ``{"count", "first", "last"}`` (``time.monotonic()``, one clock for every
process on Linux) after COUNT messages. Either gives up after ``LIMIT`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

LIMIT = 300.0
SINK_PREFETCH = 256


async def echo(url: str, ping: str, pong: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(ping, durable=True, passive=True)
        done = asyncio.Event()

        async def answer(message: AbstractIncomingMessage) -> None:
            if message.body == b"stop":
                await message.ack()
                done.set()
                return
            reply = aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(reply, routing_key=pong)
            await message.ack()

        await queue.consume(answer)
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), LIMIT)


async def sink(url: str, name: str, count: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=SINK_PREFETCH)
        queue = await channel.declare_queue(name, durable=True, passive=True)
        times: list[float] = []
        done = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            await message.ack()  # one ack per message, as the worker does
            times.append(time.monotonic())
            if len(times) >= count:
                done.set()

        await queue.consume(take)
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), LIMIT)
        print(orjson.dumps({"count": len(times), "first": times[0], "last": times[-1]}).decode())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    modes = parser.add_subparsers(dest="mode", required=True)
    e = modes.add_parser("echo")
    e.add_argument("url")
    e.add_argument("ping")
    e.add_argument("pong")
    s = modes.add_parser("sink")
    s.add_argument("url")
    s.add_argument("queue")
    s.add_argument("count", type=int)
    args = parser.parse_args()
    if args.mode == "echo":
        asyncio.run(echo(args.url, args.ping, args.pong))
    else:
        asyncio.run(sink(args.url, args.queue, args.count))


if __name__ == "__main__":
    main()
