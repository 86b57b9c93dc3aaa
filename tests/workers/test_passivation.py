"""Idle conversations are passivated, and resumed with their history by the next action."""

from __future__ import annotations

import asyncio

import orjson
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, status_becomes, token

PASSIVATE_AFTER = 0.5


async def test_an_idle_conversation_is_passivated_and_resumed(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"passivate_after": PASSIVATE_AFTER})
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
    fleet.settings = settings.model_copy(update={"passivate_after": PASSIVATE_AFTER})
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
