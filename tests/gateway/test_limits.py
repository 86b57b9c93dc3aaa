"""The per-user limit of running conversations, enforced atomically."""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, token

LIMIT = 5


async def test_fifty_concurrent_starts_through_two_gateways_run_at_most_the_limit(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"max_conversations_per_user": LIMIT})
    second = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(second)
    await fleet.start_worker()
    bearer = token(settings, "alice")
    urls = [fleet.url, f"http://127.0.0.1:{second}"]

    async def start(i: int) -> httpx.Response:
        async with http(urls[i % 2], bearer) as client:
            return await client.post("/api/conversations", json={"initial_message": f"hi {i}"})

    responses = await asyncio.gather(*(start(i) for i in range(50)))

    created = [r.json()["conversation_id"] for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == LIMIT
    assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {
        (429, "too_many_conversations")
    }
    assert await redis.zcard(names.running("alice")) == LIMIT
    async with http(fleet.url, bearer) as client:
        listed = (await client.get("/api/conversations")).json()["conversations"]
    assert sorted(c["conversation_id"] for c in listed) == sorted(created)
    # Each one runs and answers; another user is not affected by alice's limit.
    for cid in created:
        watcher = await Client().connect(fleet.url, bearer, cid)
        await watcher.wait_for(lambda ev: len(ev) >= 4)
        await watcher.close()
    assert await create_conversation(fleet.url, token(settings, "bob"))


async def test_evict_oldest_closes_the_least_recently_active(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(
        update={"max_conversations_per_user": 2, "over_limit_policy": "evict_oldest"}
    )
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    oldest = await create_conversation(fleet.url, bearer)
    newer = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, oldest)
    # Activity makes `oldest` the most recently active: `newer` is now the least.
    assert (await client.act("still here"))["ok"]
    await client.wait_for(lambda ev: len(ev) >= 4)
    watcher = await Client().connect(fleet.url, bearer, newer)

    newest = await create_conversation(fleet.url, bearer)

    events = await watcher.wait_for(lambda ev: any(e["kind"] == "closed" for e in ev))
    assert events[-1]["source"] == "system"
    assert events[-1]["data"] == {"reason": "evicted: too many conversations"}
    running = set(await redis.zrange(names.running("alice"), 0, -1))
    assert running == {oldest.encode(), newest.encode()}
    refused = await watcher.act("hello?")
    assert refused["error"]["code"] == "conversation_closed"
    await client.close()
    await watcher.close()
