"""The fleet's AMQP topology and publishers (aio-pika).

- ``<ns>.conv.<id>``: a conversation's durable queue of client actions, published
  through the default exchange (no binding to create or keep: a conversation costs
  one declare); persistent, ``mandatory`` and confirmed, so an action is
  acknowledged only once it is safely queued, and a missing queue is an error.
- ``<ns>.out`` (topic): logged events for live delivery, routed by conversation id
  to the gateways that have clients of it. Not confirmed: the Redis log is the
  record, and gateways fill any gap from it.
- ``<ns>.dispatch``: durable work queue of claim requests for workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractExchange,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)

from broker import connection
from broker.errors import ConversationClosed, Unavailable
from broker.names import Names

PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
TRANSIENT = aio_pika.DeliveryMode.NOT_PERSISTENT


class Broker:
    """One robust AMQP connection with the fleet's exchanges declared; ``connect`` first."""

    connection: AbstractRobustConnection
    confirmed: AbstractRobustChannel
    fast: AbstractRobustChannel
    outbound: AbstractExchange

    def __init__(self, url: str, names: Names, name: str = "fleet", declarers: int = 1) -> None:
        self.url = url
        self.names = names
        self.name = name
        self.declarers = declarers

    async def connect(self) -> None:
        self.connection = await connection.connect(self.url, self.name)
        self.confirmed = await self.connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        self.fast = await self.connection.channel(publisher_confirms=False)
        # The broker serves one channel's methods in order: declaring on a few
        # channels lets a burst of new conversations be declared in parallel.
        self._declarers = [
            await self.connection.channel(publisher_confirms=False) for _ in range(self.declarers)
        ]
        topic = aio_pika.ExchangeType.TOPIC
        names = self.names
        # Live events go out on the channel without confirms: nothing waits for them.
        self.outbound = await self.fast.declare_exchange(
            names.outbound_exchange, topic, durable=True
        )
        await self.confirmed.declare_queue(names.dispatch_queue, durable=True)

    async def close(self) -> None:
        await self.connection.close()

    async def declare_conversation(
        self, cid: str, channel: AbstractRobustChannel | None = None
    ) -> AbstractRobustQueue:
        """The conversation's durable queue of client actions.

        Not ``robust``: a robust channel would remember every queue it ever declared
        and redeclare them all on reconnect; the worker redeclares what it still runs.
        """
        channel = channel or self._declarers[hash(cid) % len(self._declarers)]
        return await channel.declare_queue(
            self.names.conversation_queue(cid), durable=True, robust=False
        )

    async def publish_action(self, cid: str, body: bytes, message_id: str) -> None:
        """Queue an inbound action; return only once the broker confirmed it."""
        message = aio_pika.Message(
            body, delivery_mode=PERSISTENT, content_type="application/json", message_id=message_id
        )
        try:
            await self.confirmed.default_exchange.publish(
                message, routing_key=self.names.conversation_queue(cid), mandatory=True, timeout=10
            )
        except PublishError as exc:
            raise ConversationClosed(f"conversation {cid} takes no more input") from exc
        except (AMQPError, DeliveryError, TimeoutError, ConnectionError, RuntimeError) as exc:
            # RuntimeError: aio-pika's word for a channel or connection that is closed.
            raise Unavailable("the message broker did not confirm the action") from exc

    async def close_conversation(self, cid: str, reason: str) -> None:
        """Queue the close marker behind the actions already queued; its owner finishes it."""
        body = orjson.dumps({"kind": "close", "reason": reason})
        try:
            await self.publish_action(cid, body, message_id=f"close:{cid}")
        except ConversationClosed:
            return  # the queue is gone: it was finished already
        await self.request_claim(cid)

    async def delete_if_empty(self, cid: str) -> bool:
        """Delete the conversation's queue unless input is waiting in it.

        On a channel of its own: a refusal closes the channel it happens on.
        """
        async with self.connection.channel(publisher_confirms=False) as channel:
            try:
                await channel.queue_delete(self.names.conversation_queue(cid), if_empty=True)
            except ChannelPreconditionFailed:
                return False
        return True

    async def request_claim(self, cid: str) -> None:
        """Ask some worker with spare capacity to claim ``cid``."""
        message = aio_pika.Message(orjson.dumps({"conversation_id": cid}), delivery_mode=PERSISTENT)
        try:
            await self.confirmed.default_exchange.publish(
                message, routing_key=self.names.dispatch_queue, mandatory=True, timeout=10
            )
        except (AMQPError, TimeoutError, ConnectionError, RuntimeError) as exc:
            raise Unavailable("the message broker did not confirm the claim request") from exc

    async def publish_events(self, cid: str, entries: Sequence[bytes]) -> None:
        """Send logged events to the gateways that have clients of ``cid``: one message
        (a JSON array) per batch, since the broker's cost is per message."""
        body = b"[" + b",".join(entries) + b"]"
        await self.outbound.publish(
            aio_pika.Message(body, delivery_mode=TRANSIENT), routing_key=cid, mandatory=False
        )
