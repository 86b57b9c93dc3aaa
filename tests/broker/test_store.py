"""The fenced append and the log on the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from redis.asyncio import Redis

from broker.errors import LeaseLost
from broker.events import NewEvent, state
from broker.leases import Leases
from broker.liveness import Liveness
from broker.names import Names, lease_value
from broker.ratelimit import Rate
from broker.store import Limits, Store
from tests.conftest import REDIS_URL

LIMITS = Limits(100, "reject", Rate(1000.0, 1000))


async def owned(redis: Redis, names: Names) -> tuple[Store, str, str]:
    store, leases = Store(redis, names), Leases(redis, names)
    cid = uuid.uuid4().hex
    await store.create(cid, "alice", LIMITS, "enqueue")
    await Liveness(redis, names, "worker").heartbeat("w", 30, register=True)
    claim = await leases.claim(cid, "w", 100)
    return store, cid, lease_value("w", claim.epoch)


def message(text: str) -> NewEvent:
    return NewEvent("agent", "message", {"content": text})


async def test_ids_are_consecutive_from_zero(redis: Redis, names: Names) -> None:
    store, cid, lease = await owned(redis, names)
    first = await store.append(cid, lease, [message("a").body(cid)])
    batch = await store.append(cid, lease, [message("b").body(cid), message("c").body(cid)])

    events = [orjson.loads(raw) for raw in await store.read(cid)]
    assert (first.first_id, batch.first_id) == (0, 1)
    assert [(e["id"], e["data"]["content"]) for e in events] == [(0, "a"), (1, "b"), (2, "c")]
    assert all(e["conversation_id"] == cid and e["source"] == "agent" for e in events)


async def test_once_logs_a_batch_at_most_once(redis: Redis, names: Names) -> None:
    store, cid, lease = await owned(redis, names)
    bodies = [message("x").body(cid), message("y").body(cid)]
    first = await store.append(cid, lease, bodies, once="reply:1")
    again = await store.append(cid, lease, bodies, once="reply:1")

    assert not first.duplicate and again.duplicate
    assert again.first_id == 0
    assert [orjson.loads(e)["data"]["content"] for e in again.entries] == ["x", "y"]
    assert len(await store.read(cid)) == 2


async def test_read_pages_after_an_id(redis: Redis, names: Names) -> None:
    store, cid, lease = await owned(redis, names)
    await store.append(cid, lease, [message(str(i)).body(cid) for i in range(5)])

    page = [orjson.loads(raw)["id"] for raw in await store.read(cid, after=1, limit=2)]
    rest = [orjson.loads(raw)["id"] for raw in await store.read(cid, after=3)]
    assert (page, rest) == ([2, 3], [4])


async def test_the_record_keeps_the_last_state_an_append_logged(redis: Redis, names: Names) -> None:
    store, cid, lease = await owned(redis, names)
    fresh = await store.get(cid)
    running = [state("running").body(cid), message("m").body(cid)]
    await store.append(cid, lease, running, once="t:1", agent_state="running")
    after_running = await store.get(cid)
    await store.append(cid, lease, [message("n").body(cid)])  # no state: unchanged
    unchanged = await store.get(cid)
    await store.append(cid, lease, running, once="t:1", agent_state="stale")  # a duplicate
    duplicate = await store.get(cid)

    assert fresh is not None and fresh.agent_state is None
    assert after_running is not None and after_running.agent_state == "running"
    assert unchanged is not None and unchanged.agent_state == "running"
    assert duplicate is not None and duplicate.agent_state == "running"


async def test_reading_after_an_id_far_past_the_log_reads_nothing(
    redis: Redis, names: Names
) -> None:
    """Ids past 2**53 do not fit the script's numbers (doubles): found by the API fuzz,
    ``?after=892181448554428928`` failed with a Redis error."""
    store, cid, lease = await owned(redis, names)
    await store.append(cid, lease, [message("a").body(cid)])
    assert await store.read(cid, 892181448554428928) == []
    assert await store.read(cid, 2**62, 10) == []


async def test_appends_made_at_once_share_one_pipeline_each_with_its_own_reply(
    redis: Redis, names: Names
) -> None:
    """Fifty conversations append in the same loop turn: one connection carries them
    all, each gets its own first id, and the one whose lease moved on alone is fenced."""
    owners = [await owned(redis, names) for _ in range(50)]
    stale_cid = owners[7][1]
    await redis.delete(names.lease(stale_cid))  # its lease is gone: fenced
    await owners[3][0].append(owners[3][1], owners[3][2], [message("first").body(owners[3][1])])

    client = Redis.from_url(REDIS_URL)
    store = Store(client, names)
    try:
        replies = await asyncio.gather(
            *(store.append(cid, lease, [message("x").body(cid)]) for _, cid, lease in owners),
            return_exceptions=True,
        )
        connections = len(client.connection_pool._available_connections)
    finally:
        await client.aclose()
    assert connections == 1
    assert isinstance(replies[7], LeaseLost)
    first_ids = [r.first_id for i, r in enumerate(replies) if i != 7]  # type: ignore[union-attr]
    assert first_ids == [1 if i == 3 else 0 for i in range(50) if i != 7]


async def test_a_batch_outlives_redis_forgetting_its_scripts(redis: Redis, names: Names) -> None:
    store, cid, lease = await owned(redis, names)
    await redis.script_flush()  # as after a restart: every client sends its scripts again
    appended = await asyncio.gather(
        store.append(cid, lease, [message("a").body(cid)]),
        store.append(cid, lease, [message("b").body(cid)]),
    )
    assert sorted(a.first_id for a in appended) == [0, 1]
