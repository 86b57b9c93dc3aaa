"""The HTTP API on the real servers: create, list, get, events, actions, errors."""

from __future__ import annotations

import asyncio

import httpx

from broker.settings import Settings
from tests.chaos.servers import Proxy
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, token


async def test_create_list_get_and_read_events(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="hi")
    watcher = await Client().connect(fleet.url, bearer, cid)
    await watcher.wait_for(lambda ev: len(ev) >= 4)
    await watcher.close()

    async with http(fleet.url, bearer) as client:
        listed = (await client.get("/api/conversations")).json()["conversations"]
        one = (await client.get(f"/api/conversations/{cid}")).json()
        events = (await client.get(f"/api/conversations/{cid}/events")).json()["events"]
        page = (await client.get(f"/api/conversations/{cid}/events?after=0&limit=2")).json()

    assert [c["conversation_id"] for c in listed] == [cid]
    assert one["conversation_id"] == cid and one["status"] == "running"
    assert one["last_event_id"] == 3 and one["owner"]
    assert [e["id"] for e in events] == [0, 1, 2, 3]
    assert events[2]["data"]["content"] == "hi"
    assert [e["id"] for e in page["events"]] == [1, 2]


async def test_list_pages_with_after_and_limit(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cids = [await create_conversation(fleet.url, bearer) for _ in range(3)]

    async with http(fleet.url, bearer) as client:
        first = (await client.get("/api/conversations?limit=2")).json()["conversations"]
        after = first[-1]["conversation_id"]
        rest = (await client.get(f"/api/conversations?after={after}")).json()["conversations"]

    assert [c["conversation_id"] for c in first + rest] == cids


async def test_action_over_http_is_answered(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    async with http(fleet.url, bearer) as api:
        body = {"kind": "message", "data": {"content": "via http"}, "action_id": "h-1"}
        response = await api.post(f"/api/conversations/{cid}/actions", json=body)

    assert response.status_code == 200
    assert response.json() == {"ok": True, "action_id": "h-1"}
    events = await client.wait_for(lambda ev: len(ev) >= 4)
    assert events[2]["data"] == {
        "content": "via http",
        "in_reply_to": "h-1",
        "turn_id": "h-1",
        "step": 0,
    }
    await client.close()


async def test_errors_are_json_with_a_code(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    alice, bob = token(settings, "alice"), token(settings, "bob")
    cid = await create_conversation(fleet.url, alice)

    async with http(fleet.url) as anonymous:
        missing = await anonymous.get("/api/conversations")
    async with http(fleet.url, "not-a-jwt") as forged:
        invalid = await forged.get("/api/conversations")
    async with http(fleet.url, bob) as other:
        foreign = await other.get(f"/api/conversations/{cid}")
        foreign_events = await other.get(f"/api/conversations/{cid}/events")
        foreign_action = await other.post(
            f"/api/conversations/{cid}/actions", json={"kind": "message", "data": {"content": "x"}}
        )
    async with http(fleet.url, alice) as client:
        unknown = await client.get("/api/conversations/" + "0" * 32)
        bad_json = await client.post(f"/api/conversations/{cid}/actions", content=b"{nope")
        bad_limit = await client.get(f"/api/conversations/{cid}/events?limit=0")
        bad_initial = await client.post("/api/conversations", json={"initial_message": 5})
        events = (await client.get(f"/api/conversations/{cid}/events")).json()["events"]

    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (401, "unauthorized")
    for response in (foreign, foreign_events, foreign_action, unknown):
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert (bad_json.status_code, bad_json.json()["error"]["message"]) == (400, "body must be JSON")
    assert bad_limit.status_code == 400
    assert bad_initial.status_code == 400
    assert events == []


async def test_health_and_readiness(fleet: InProcessFleet, settings: Settings) -> None:
    """Ready while Redis and RabbitMQ both answer; not while either is cut off (a
    partition: connections stay open, nothing comes back), and ready again after."""
    redis, rabbitmq = Proxy(6379), Proxy(5672)
    redis_port, rabbitmq_port = await redis.start(), await rabbitmq.start()
    fleet.settings = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "amqp_url": f"amqp://guest:guest@127.0.0.1:{rabbitmq_port}/",
        }
    )
    try:
        await fleet.start_gateway()
        async with http(fleet.url) as client:
            assert (await client.get("/healthz")).json() == {"ok": True}
            ready = await client.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"ok": True})
            for proxy in (redis, rabbitmq):
                proxy.cut()
                await readiness_becomes(client, 503)
                assert (await client.get("/healthz")).json() == {"ok": True}  # alive, though
                proxy.heal()
                await readiness_becomes(client, 200)
    finally:
        await fleet.close()
        await redis.close()
        await rabbitmq.close()


async def readiness_becomes(client: httpx.AsyncClient, status: int) -> None:
    """Poll ``/readyz`` (with a deadline) until it answers ``status``."""
    seen: list[int] = []
    try:
        async with asyncio.timeout(20):
            while not seen or seen[-1] != status:
                seen.append((await client.get("/readyz")).status_code)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"/readyz never answered {status}; it answered {seen}") from None
