"""FLEET_QUEUE_TYPE on the real RabbitMQ: quorum queues are declared as such, a
conversation's quorum queue is deleted only when empty (without the if-empty flag,
which RabbitMQ refuses for quorum queues by closing the connection), and a namespace's
queue type cannot change under it: a clear error, at once, never a retry loop."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from broker.amqp import Broker, QueueTypeMismatch
from broker.dependencies import Dependency
from broker.events import Action
from broker.names import Names
from broker.settings import QueueType, Settings
from fleet.harness import FleetProcess, LocalFleet


async def test_a_quorum_queue_is_deleted_only_when_empty(settings: Settings, names: Names) -> None:
    broker = Broker(settings.amqp_url, names, name="test", queue_type="quorum")
    await broker.connect()
    try:
        empty, busy = uuid.uuid4().hex, uuid.uuid4().hex
        await broker.declare_conversation(empty)
        await broker.declare_conversation(busy)
        await broker.publish_input(busy, Action("a-1", "message", "waiting"))

        assert await broker.delete_if_empty(empty)
        assert await broker.queue_depth(empty) is None
        assert not await broker.delete_if_empty(busy)
        assert await broker.queue_depth(busy) == 1
        assert broker.is_open  # the connection survived both
        assert await broker.delete_if_empty(uuid.uuid4().hex)  # none: nothing to do
        await broker.delete([names.conversation_queue(busy)])
    finally:
        await broker.close()


async def test_quorum_queues_are_declared_quorum(settings: Settings, names: Names) -> None:
    """A classic broker's declarations of the same queues are refused; a quorum
    broker's pass."""
    quorum = Broker(settings.amqp_url, names, name="test", queue_type="quorum")
    await quorum.connect()
    cid = uuid.uuid4().hex
    await quorum.declare_conversation(cid)
    await quorum.declare_webhooks()
    classic = Broker(settings.amqp_url, names, name="test")
    await classic.connect(declare=False)
    try:
        declarations = (classic.connect, lambda: classic.declare_conversation(cid))
        for declare in (*declarations, classic.declare_webhooks):
            with pytest.raises(QueueTypeMismatch):
                await declare()
        await quorum.declare_conversation(cid)
        await quorum.declare_webhooks()
    finally:
        await classic.close()
        await quorum.close()


@pytest.mark.parametrize("first, then", [("classic", "quorum"), ("quorum", "classic")])
async def test_another_queue_type_in_a_namespace_is_refused_at_once(
    settings: Settings, names: Names, first: QueueType, then: QueueType
) -> None:
    made = Broker(settings.amqp_url, names, name="first", queue_type=first)
    await made.connect()
    await made.close()

    other = Broker(settings.amqp_url, names, name="then", queue_type=then)
    health = Dependency("RabbitMQ", settings.amqp_url, timeout=60)
    async with asyncio.timeout(5):  # not retried for a minute
        with pytest.raises(QueueTypeMismatch, match=f"FLEET_QUEUE_TYPE={then}.*FLEET_NAMESPACE"):
            await health.reach(other.connect, asyncio.Event())
    await other.close()


async def test_a_worker_of_another_queue_type_exits_saying_why(settings: Settings) -> None:
    async with LocalFleet(settings) as fleet:
        await fleet.reaper()  # the namespace's queues are classic
        worker = FleetProcess("worker", ["worker"], {**fleet.env, "FLEET_QUEUE_TYPE": "quorum"})
        fleet.processes.append(worker)
        await worker.start()
        assert await worker.wait(30) == 2  # a configuration error
        said = "\n".join(worker.raw)
        assert "FLEET_QUEUE_TYPE=quorum" in said and settings.namespace in said, said
