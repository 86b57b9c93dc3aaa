"""A conversation's inbox ends when its channel closes under it: the robust
connection reopens the channel without the consumers it had, so the loop must consume
again. A channel closes under its other conversations when one of them gets a channel
error, or when one of its RPCs is cancelled (aiormq then closes the channel: a worker
fenced while a loop was opening its queue did that)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from broker.amqp import Broker
from broker.names import Names
from broker.settings import Settings


async def test_an_inbox_ends_when_its_channel_closes_under_it(
    settings: Settings, names: Names
) -> None:
    broker = Broker(settings.amqp_url, names, name="owner", channels=1)
    await broker.connect()
    cid = uuid.uuid4().hex
    inbox = await broker.inbox(cid)
    try:
        # Another conversation's error on the same channel: the broker closes it (404).
        channel = broker._channel_for(uuid.uuid4().hex)
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(names.conversation_queue("missing"), passive=True)
        assert await asyncio.wait_for(inbox.next(), 10) is None
        # Consuming again works once the channel is reopened (the loop retries so).
        async with asyncio.timeout(10):
            while not channel.is_initialized or channel.is_closed:
                await asyncio.sleep(0.05)
        again = await broker.inbox(cid)
        await again.release()
    finally:
        await inbox.release()
        await broker.delete([names.conversation_queue(cid)])
        await broker.close()
