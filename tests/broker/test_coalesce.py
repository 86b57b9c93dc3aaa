"""An AMQP connection's writes of one loop turn leave in one socket write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika

from broker import connection
from broker.coalesce import CoalescedTransport, CoalescedTransports
from tests.conftest import AMQP_URL


class Recorder(asyncio.Transport):
    """The socket's side: what each write call sent."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_turn_leave_in_one_write_in_order() -> None:
    inner = Recorder()
    transport = CoalescedTransport(inner)
    transport.write(b"a")
    transport.writelines([b"b", bytearray(b"c")])
    transport.write(memoryview(b"d"))
    assert inner.writes == []  # held until the next turn
    assert transport.get_write_buffer_size() == 4
    await asyncio.sleep(0)
    assert inner.writes == [b"abcd"]
    transport.write(b"e")
    await asyncio.sleep(0)
    assert inner.writes == [b"abcd", b"e"]


async def test_close_sends_what_is_held_first() -> None:
    inner = Recorder()
    transport = CoalescedTransport(inner)
    transport.write(b"last words")
    transport.close()
    assert (inner.writes, inner.closed) == ([b"last words"], True)
    await asyncio.sleep(0)  # the scheduled flush finds nothing more
    assert inner.writes == [b"last words"]


async def test_a_fleet_connection_coalesces_and_loses_nothing(namespace: str) -> None:
    """Many publishes made in one turn, on the fleet's connection to the real RabbitMQ:
    each confirmed, and consumed whole and in order."""
    conn = await connection.connect(AMQP_URL, "test-coalesce")
    try:
        assert isinstance(conn.kwargs["transport_factory"], CoalescedTransports)
        channel = await conn.channel()
        queue = await channel.declare_queue(f"{namespace}.coalesce", auto_delete=True)
        bodies = [str(i).encode() * (1 + i % 300) for i in range(500)]
        await asyncio.gather(
            *(
                channel.default_exchange.publish(aio_pika.Message(body), queue.name)
                for body in bodies
            )
        )
        received: list[bytes] = []
        async with queue.iterator() as messages:
            async for message in messages:
                received.append(message.body)
                await message.ack()
                if len(received) == len(bodies):
                    break
        assert received == bodies
    finally:
        await conn.close()
