"""A pool channel that closes under a worker's conversations (a channel error of one
of them, or aiormq closing it as one of its RPCs is cancelled: a fence cancelling a
loop that was opening its queue did that) is reopened without their consumers: each
conversation on it consumes again, and answers."""

from __future__ import annotations

import uuid

import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, answered, create_conversation, say, token


async def test_a_conversation_answers_after_its_channel_closed_under_it(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="before")
    client = await Client().connect(fleet.url, bearer, cid)
    await client.wait_for(lambda events: len(events) >= 4)  # answered, consuming
    await client.close()

    # Another conversation's error on the same pool channel: the broker closes it (404).
    channel = worker.broker._channel_for(cid)
    with pytest.raises(ChannelNotFoundEntity):
        await channel.declare_queue(names.conversation_queue(uuid.uuid4().hex), passive=True)

    await say(fleet.url, bearer, cid, "after")
    await answered(redis, names, cid, "after")
