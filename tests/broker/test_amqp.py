"""Owner queries on the real RabbitMQ: asked into a conversation's queue, answered by
direct reply-to; refused at once when the queue is gone; expired when nobody takes
them; nothing left waiting afterwards. Input into no queue is refused too. All of it
with classic and with quorum queues."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from broker.amqp import Broker
from broker.errors import ConversationClosed
from broker.events import (
    Action,
    ChatMessage,
    Query,
    QueryAnswer,
    decode_answer,
    decode_input,
    encode_answer,
)
from broker.names import Names
from broker.settings import Settings

QUERY = Query((ChatMessage("user", "hello?"),), timeout=5.0)


@pytest.fixture(params=["classic", "quorum"])
async def brokers(
    settings: Settings, names: Names, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Broker, Broker]]:
    """An asker (a gateway's broker) and an owner (a worker's)."""
    asker = Broker(settings.amqp_url, names, name="asker", queue_type=request.param)
    owner = Broker(settings.amqp_url, names, name="owner", queue_type=request.param)
    await asker.connect()
    await owner.connect()
    await asker.listen_answers()
    yield asker, owner
    await asker.close()
    await owner.close()


async def test_a_query_reaches_the_consumer_and_its_answer_the_asker(
    brokers: tuple[Broker, Broker], names: Names
) -> None:
    asker, owner = brokers
    cid = uuid.uuid4().hex
    await owner.declare_conversation(cid)
    inbox = await owner.inbox(cid)
    try:
        async with asker.ask(cid, QUERY) as answer:
            delivery = await asyncio.wait_for(inbox.next(), 5)
            assert delivery is not None and delivery.reply_to and delivery.correlation_id
            assert decode_input(delivery.body) == QUERY
            await delivery.ack()
            body = encode_answer(QueryAnswer(content="hi"))
            await owner.answer(delivery.reply_to, delivery.correlation_id, body)
            got = await asyncio.wait_for(answer, 5)
        assert decode_answer(got) == QueryAnswer(content="hi")
        assert asker._waiting == {}  # nothing left behind
        # A late answer, its asker gone, is dropped quietly.
        await owner.answer(delivery.reply_to, delivery.correlation_id, body)
    finally:
        await inbox.release()
        await owner.delete([names.conversation_queue(cid)])


async def test_a_query_to_a_conversation_without_a_queue_fails_at_once(
    brokers: tuple[Broker, Broker],
) -> None:
    asker, _ = brokers
    with pytest.raises(ConversationClosed):  # returned by the broker, not timed out
        async with asker.ask(uuid.uuid4().hex, QUERY):
            raise AssertionError("published into no queue")
    assert asker._waiting == {}


async def test_an_unanswered_query_expires_from_the_queue(
    brokers: tuple[Broker, Broker], names: Names
) -> None:
    asker, owner = brokers
    cid = uuid.uuid4().hex
    await owner.declare_conversation(cid)
    try:
        async with asker.ask(cid, Query(QUERY.messages, timeout=0.2)):
            assert await owner.queue_depth(cid) == 1
        async with asyncio.timeout(5):
            while await owner.queue_depth(cid):
                await asyncio.sleep(0.05)
        assert await owner.queue_depth(cid) == 0
    finally:
        await owner.delete([names.conversation_queue(cid)])


async def test_input_to_a_conversation_without_a_queue_raises(
    brokers: tuple[Broker, Broker],
) -> None:
    """``mandatory``: an action routed to no queue is returned, never confirmed as
    queued (a broker without ``reopen`` may not declare it again)."""
    _, owner = brokers
    action = Action("a-1", "message", "into the void")
    with pytest.raises(ConversationClosed):
        await owner.publish_input(uuid.uuid4().hex, action)
