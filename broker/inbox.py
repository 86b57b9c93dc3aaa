"""One consumer's deliveries, in order, for a loop that handles them one at a time.

Written instead of aio-pika's queue iterator for two reasons: deliveries reach a
consumer callback through tasks, so one can land after the consumer was closed (it
must be requeued, not kept unacked until the channel closes); and after a broker
reconnect the loop must consume again on the restored channel, dropping what the
dead channel delivered (the broker requeued those already).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, ConsumerTag
from aio_pika.exceptions import ChannelInvalidStateError


class Delivery:
    """One message taken from a queue, to be settled once: acked, requeued or rejected."""

    __slots__ = ("_message",)

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def headers(self) -> Mapping[str, Any]:
        return self._message.headers

    @property
    def reply_to(self) -> str | None:
        """Where a request wants its answer (an owner query's asker)."""
        return self._message.reply_to

    @property
    def correlation_id(self) -> str | None:
        return self._message.correlation_id

    @property
    def stale(self) -> bool:
        """Its channel is gone: the broker took the message back already."""
        try:
            self._message.channel  # noqa: B018 (raises once the channel is closed)
        except ChannelInvalidStateError:
            return True
        return False

    def processing(self) -> AbstractAsyncContextManager[Any]:
        """Ack when the block succeeds, requeue when it raises."""
        return self._message.process(requeue=True)

    async def ack(self) -> None:
        await self._message.ack()

    async def requeue(self) -> None:
        """Back to the queue; quiet if the channel died (it returned the message already)."""
        with contextlib.suppress(Exception):
            await self._message.nack(requeue=True)

    async def reject(self) -> None:
        """Drop it for good: it can never be handled."""
        await self._message.reject(requeue=False)


class Inbox:
    """Consumes a queue into an ordered buffer until closed."""

    def __init__(self) -> None:
        self._buffer: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._closed = False
        self._queue: AbstractQueue | None = None
        self._tag: ConsumerTag | None = None
        self.waiting = 0  # messages ready in the queue when consuming began

    async def consume(self, queue: AbstractQueue) -> None:
        self._queue = queue
        result = queue.declaration_result
        self.waiting = int(result.message_count or 0) if result is not None else 0
        # A channel that closes under us (a channel error; aiormq closing it because
        # another conversation's RPC on it was cancelled) is reopened by the robust
        # connection without our consumer: end, so that our loop consumes again.
        queue.close_callbacks.add(self._channel_closed)
        self._tag = await queue.consume(self._deliver)

    def _channel_closed(self, _queue: AbstractQueue | None, _exc: BaseException | None, /) -> None:
        if not self._closed:
            self.close()

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        if self._closed:
            await Delivery(message).requeue()
        else:
            self._buffer.put_nowait(Delivery(message))

    async def next(self) -> Delivery | None:
        """The next delivery, or None once closed."""
        return None if self._closed else await self._buffer.get()

    def close(self) -> None:
        """Stop handing out deliveries; ``release`` gives back the ones held."""
        self._closed = True
        self._buffer.put_nowait(None)

    async def release(self) -> None:
        """Cancel the consumer and requeue what it holds; quiet if the channel died."""
        self.close()
        if self._queue is not None:
            self._queue.close_callbacks.discard(self._channel_closed)
            if self._tag is not None:
                with contextlib.suppress(Exception):
                    await self._queue.cancel(self._tag)
        while not self._buffer.empty():
            delivery = self._buffer.get_nowait()
            if delivery is not None:
                await delivery.requeue()
