"""Agents and their turns across the archive boundary: history read whole, a resumed
conversation logging after its archived ids, an unfinished turn resumed from the
archive, and the Redis memory a passivated conversation keeps."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from broker.archive import Archive
from broker.archiver import Archiver
from broker.events import NewEvent
from broker.leases import Leases
from broker.liveness import Liveness
from broker.names import Names, lease_value
from broker.ratelimit import Rate
from broker.settings import Settings
from broker.store import Limits, Store
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    archived_becomes,
    create_conversation,
    http,
    of_kind,
    replied_to,
    replies,
    say,
    status_becomes,
    token,
)

FAST = {"passivate_after": 0.5, "publish_timeout": 1.0}


async def test_an_agent_reads_its_whole_history_across_the_boundary(
    fleet: InProcessFleet, pg_settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = pg_settings.model_copy(update={**FAST, "agent": "tests.agents:Recall"})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(pg_settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="m0")
    await say(fleet.url, bearer, cid, "m1")
    await status_becomes(redis, names, cid, "idle")
    await archived_becomes(redis, names, cid, 8)

    await say(fleet.url, bearer, cid, "m2")  # resumes it, with its history in PostgreSQL
    client = await Client().connect(fleet.url, bearer, cid)
    events = await client.wait_for(replied_to("m2"))
    await client.close()

    assert replies(events)["m2"] == ["ids ok: m0 m1 m2"]
    assert [e["id"] for e in events] == list(range(12))  # continued after the archived 0..7
    assert events[8]["data"]["content"] == "m2"
    assert await redis.llen(names.log(cid)) == 4


async def test_a_turn_waiting_for_approval_resumes_from_the_archive(
    fleet: InProcessFleet, pg_settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = pg_settings.model_copy(update=FAST)
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(pg_settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="hello")
    await say(fleet.url, bearer, cid, "/approve after the archive", action_id="nap")
    # Logged: hello's turn (0..3), then the message, running, the request, awaiting (4..7).
    await status_becomes(redis, names, cid, "idle")
    await archived_becomes(redis, names, cid, 8)
    turn_from = await redis.hget(names.meta(cid), "turn_from")
    requests = await redis.hgetall(names.approvals(cid))

    async with http(fleet.url, bearer) as api:
        events = (await api.get(f"/api/conversations/{cid}/events")).json()["events"]
        request_id = of_kind(events, "approval_request")[0]["data"]["request_id"]
        body: dict[str, Any] = {
            "kind": "approval",
            "data": {"request_id": request_id, "choice": "yes"},
            "action_id": "wake",
        }
        assert (await api.post(f"/api/conversations/{cid}/actions", json=body)).status_code == 200
    client = await Client().connect(fleet.url, bearer, cid)
    events = await client.wait_for(replied_to("nap"))
    await client.close()

    assert turn_from == b"4"  # the unfinished turn starts in the archive
    assert list(requests) == [request_id.encode()]  # its open request stayed in Redis
    assert replies(events)["nap"] == ["after the archive"]
    assert len(of_kind(events, "approval_request")) == 1  # not asked again
    assert [e["id"] for e in events] == list(range(len(events)))


async def test_a_passivated_conversation_keeps_almost_nothing_in_redis(
    redis: Redis, names: Names, pg_settings: Settings
) -> None:
    assert pg_settings.postgres_url is not None
    archive = Archive(pg_settings.postgres_url, names.schema)
    await archive.open()
    store, leases = Store(redis, names, archive), Leases(redis, names, archiving=True)
    limits = Limits(100, "reject", Rate(1000.0, 1000))
    cid = uuid.uuid4().hex
    await store.create(cid, "alice", limits, "enqueue")
    await Liveness(redis, names, "worker").heartbeat("w", 30, register=True)
    epoch = (await leases.claim(cid, "w", 100)).epoch
    lease = lease_value("w", epoch)
    for turn in range(50):  # fifty turns of a few hundred bytes each
        said = NewEvent("user", "message", {"content": f"question {turn} " + "x" * 200})
        answer = NewEvent("agent", "message", {"content": f"answer {turn} " + "y" * 400})
        await store.append(cid, lease, [said.body(cid)], once=f"action:{turn}")
        await store.append(cid, lease, [answer.body(cid)], once=f"reply:{turn}")
    assert await leases.passivate(cid, "w", epoch, 0, 0.001) == "passivated"

    before = await conversation_memory(redis, names, cid)
    assert await Archiver(redis, names, archive, "worker").move(cid) == "archived"
    after = await conversation_memory(redis, names, cid)
    history = await store.read(cid)
    await archive.close()

    assert before > 50_000
    assert after < 1_000, after  # the record (meta) and the fencing epoch, nothing per event
    assert [orjson.loads(raw)["id"] for raw in history] == list(range(100))


async def conversation_memory(redis: Redis, names: Names, cid: str) -> int:
    """Bytes Redis spends on the conversation's own keys (``MEMORY USAGE``)."""
    total = 0
    async for key in redis.scan_iter(match=f"{names.conv(cid)}:*"):
        total += await redis.memory_usage(key, samples=0) or 0
    return total


async def test_a_closed_conversation_moves_and_stays_readable(
    fleet: InProcessFleet, pg_settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = pg_settings.model_copy(update={"passivate_after": 60.0})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(pg_settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="hello")
    client = await Client().connect(fleet.url, bearer, cid)
    await client.wait_for(lambda ev: len(ev) == 4)
    async with http(fleet.url, bearer) as api:
        assert (await api.delete(f"/api/conversations/{cid}")).status_code == 202
        await client.wait_for(lambda ev: bool(of_kind(ev, "closed")))
        await status_becomes(redis, names, cid, "closed")
        await archived_becomes(redis, names, cid, 5)  # its turn, then `closed`
        events = (await api.get(f"/api/conversations/{cid}/events")).json()["events"]
    await client.close()

    assert events == client.events
    assert [e["id"] for e in events] == list(range(5))
    assert not await redis.exists(names.log(cid))
    assert await redis.zcard(names.archive_owed(0)) == 0
