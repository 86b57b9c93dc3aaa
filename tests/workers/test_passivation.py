"""Idle conversations are passivated, and resumed with their history by the next action."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from broker.amqp import Broker
from broker.events import Action
from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    answered,
    create_conversation,
    http,
    replies,
    status_becomes,
    token,
)

PASSIVATE_AFTER = 0.5
FAST = {"passivate_after": PASSIVATE_AFTER, "publish_timeout": 2.0}


async def queue_becomes(broker: Broker, cid: str, depth: int | None) -> None:
    """Poll (with a deadline) until the conversation's queue holds ``depth`` messages
    (None: until it is gone)."""
    async with asyncio.timeout(10):
        while await broker.queue_depth(cid) != depth:
            await asyncio.sleep(0.05)


async def test_an_idle_conversation_is_passivated_and_resumed(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(
        update={"passivate_after": PASSIVATE_AFTER, "publish_timeout": 2.0}
    )
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="before")
    client = await Client().connect(fleet.url, bearer, cid)
    await client.wait_for(lambda ev: len(ev) >= 4)
    epoch = int(await redis.get(names.epoch(cid)) or 0)
    await client.close()

    await status_becomes(redis, names, cid, "idle")
    assert cid not in worker.loops
    assert await redis.get(names.lease(cid)) is None
    assert await redis.zscore(names.running("alice"), cid) is None
    assert await redis.llen(names.log(cid)) == 4
    await queue_becomes(worker.broker, cid, None)  # its queue goes: broker memory is freed
    async with asyncio.timeout(10):  # then its marker, which held input back meanwhile
        while await redis.exists(names.deleting(cid)):
            await asyncio.sleep(0.02)

    async with http(fleet.url, bearer) as api:
        body = {"kind": "message", "data": {"content": "after"}, "action_id": "after"}
        assert (await api.post(f"/api/conversations/{cid}/actions", json=body)).status_code == 200
    client = await Client().connect(fleet.url, bearer, cid)
    events = await client.wait_for(lambda ev: len(ev) >= 8)

    assert [e["id"] for e in events] == list(range(8))
    assert [events[2]["data"]["content"], events[6]["data"]["content"]] == ["before", "after"]
    assert int(await redis.get(names.epoch(cid)) or 0) > epoch  # claimed again
    assert (await redis.hget(names.meta(cid), "status")) == b"running"
    await client.close()


async def test_a_conversation_with_a_client_connected_is_not_passivated(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(
        update={"passivate_after": PASSIVATE_AFTER, "publish_timeout": 2.0}
    )
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    watched = await create_conversation(fleet.url, bearer, initial="hi")
    unwatched = await create_conversation(fleet.url, bearer, initial="hi")
    client = await Client().connect(fleet.url, bearer, watched)
    await client.wait_for(lambda ev: len(ev) >= 4)

    # The unwatched one passivates after PASSIVATE_AFTER. The watched one, idle as long,
    # must outlast another full delay: what is tested here is time passing.
    await status_becomes(redis, names, unwatched, "idle")
    await asyncio.sleep(2 * PASSIVATE_AFTER)
    assert (await redis.hget(names.meta(watched), "status")) == b"running"
    assert await redis.get(names.lease(watched)) is not None
    clients = await redis.hgetall(names.clients(watched))
    assert list(clients.values()) == [b"1"]
    await client.close()
    await status_becomes(redis, names, watched, "idle")
    logged = [orjson.loads(raw) for raw in await redis.lrange(names.log(watched), 0, -1)]
    assert [e["id"] for e in logged] == [0, 1, 2, 3]


async def test_concurrent_senders_through_two_gateways_reopen_a_passivated_conversation(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    other = await fleet.start_gateway(free_port())
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="before")
    await status_becomes(redis, names, cid, "idle")
    await queue_becomes(worker.broker, cid, None)
    urls = [fleet.url, f"http://127.0.0.1:{other.settings.port}"]

    async def send(url: str, action_id: str) -> int:
        async with http(url, bearer) as api:
            body = {"kind": "message", "data": {"content": action_id}, "action_id": action_id}
            return (await api.post(f"/api/conversations/{cid}/actions", json=body)).status_code

    sent = [f"a{i}" for i in range(20)]
    codes = await asyncio.gather(*(send(urls[i % 2], a) for i, a in enumerate(sent)))
    client = await Client().connect(fleet.url, bearer, cid)
    events = await client.wait_for(lambda ev: set(sent) <= set(replies(ev)))
    await client.close()

    assert codes == [200] * len(sent)
    assert all(len(replies(events)[a]) == 1 for a in sent)  # each answered once
    logged = [
        e["data"]["action_id"] for e in events if e["kind"] == "message" and e["source"] == "user"
    ]
    assert sorted(logged[1:]) == sorted(sent)  # each logged once, after the first message


async def test_passivation_goes_on_after_a_fence_cancelled_the_loop_it_was_stopping(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    """The worker fences itself (its loops cancelled) while it passivates a
    conversation: it still passivates the conversations it owns afterwards."""
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    first = await create_conversation(fleet.url, bearer, initial="hi")
    async with asyncio.timeout(10):
        while first not in worker.loops:
            await asyncio.sleep(0.02)
    loop, _ = worker.loops[first]
    stopping, resume = asyncio.Event(), asyncio.Event()
    drain = loop.drain

    async def drain_slowly() -> None:
        stopping.set()
        await resume.wait()
        await drain()

    loop.drain = drain_slowly  # type: ignore[method-assign]
    await asyncio.wait_for(stopping.wait(), 10)  # it is passivating the first
    await worker._fence("loop_stalled")  # its loop task is cancelled under it
    resume.set()

    second = await create_conversation(fleet.url, bearer, initial="hi")
    await status_becomes(redis, names, second, "idle")


async def test_a_passivation_that_fails_at_redis_hands_the_conversation_over(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    failed: list[str] = []
    passivate = worker.leases.passivate

    async def fails_once(cid: str, *args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(cid)
            raise RedisConnectionError("Redis went away")
        return await passivate(cid, *args, **kwargs)

    worker.leases.passivate = fails_once  # type: ignore[method-assign]
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="hi")
    async with asyncio.timeout(10):  # its first claim, to compare the next one's epoch with
        while not (epoch := int(await redis.get(names.epoch(cid)) or 0)):
            await asyncio.sleep(0.05)

    # The first try stopped its loop, then failed: the lease is handed over, the
    # conversation claimed again, and passivated at the next try.
    await status_becomes(redis, names, cid, "idle")
    assert failed == [cid]
    assert int(await redis.get(names.epoch(cid)) or 0) > epoch
    async with http(fleet.url, bearer) as api:
        body = {"kind": "message", "data": {"content": "after"}, "action_id": "after"}
        assert (await api.post(f"/api/conversations/{cid}/actions", json=body)).status_code == 200
    await answered(redis, names, cid, "after")


async def test_input_left_behind_a_queue_delete_that_failed_is_answered(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    delete_if_empty = worker.broker.delete_if_empty
    failed: list[str] = []

    async def input_arrives_then_fails(cid: str) -> bool:
        if failed:
            return await delete_if_empty(cid)
        failed.append(cid)  # input came as the passivation ended (no client to wait for it)
        await worker.broker.publish_input(cid, Action("late", "message", "late"))
        raise ConnectionError("the broker went away")

    worker.broker.delete_if_empty = input_arrives_then_fails  # type: ignore[method-assign]
    cid = await create_conversation(fleet.url, token(settings, "alice"), initial="hi")

    # Whether the queue held anything is unknown: an owner is asked for, and answers it.
    await answered(redis, names, cid, "late")
    assert failed == [cid]
    await status_becomes(redis, names, cid, "idle")  # and it is passivated again
