"""Moving history to PostgreSQL, on the real Redis and PostgreSQL: what moves, what
stays, reads and dedupe across the boundary, and moves that meet a resumed
conversation or another mover."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
from redis.asyncio import Redis

from broker.archive import Archive
from broker.archiver import Archiver
from broker.errors import Unavailable
from broker.events import Action, NewEvent
from broker.leases import Leases
from broker.liveness import Liveness
from broker.names import Names, lease_value
from broker.ratelimit import Rate
from broker.settings import Settings
from broker.store import Limits, Store

LIMITS = Limits(100, "reject", Rate(1000.0, 1000))
BATCHES = 12  # of three events each: 36 events


@dataclass
class History:
    """A store, leases and a mover over the real servers, with one conversation."""

    store: Store
    leases: Leases
    archiver: Archiver
    redis: Redis
    names: Names
    cid: str
    lease: str = ""

    async def claim(self) -> str:
        claim = await self.leases.claim(self.cid, "w", 100)
        assert claim.outcome == "claimed"
        self.lease = lease_value("w", claim.epoch)
        return self.lease

    async def passivate(self) -> None:
        _, epoch = self.lease.rsplit(":", 1)
        assert await self.leases.passivate(self.cid, "w", int(epoch), 0, 0.001) == "passivated"

    async def log(self, text: str, once: str = "", count: int = 3) -> list[int]:
        bodies = [message(f"{text}.{i}").body(self.cid) for i in range(count)]
        appended = await self.store.append(self.cid, self.lease, bodies, once=once)
        return [orjson.loads(e)["id"] for e in appended.entries] or list(
            range(appended.first_id, appended.first_id + count)
        )

    async def admit(self, action_id: str, content: str) -> str:
        action = Action(action_id, "message", content)
        admission = await self.store.admit(self.cid, "alice", LIMITS, action, 10)
        return admission.outcome

    async def redis_keys(self) -> dict[str, int]:
        n = self.names
        keys = {"log": n.log(self.cid), "once": n.once(self.cid), "actions": n.actions(self.cid)}
        return {name: await self.redis.exists(key) for name, key in keys.items()}


def message(text: str) -> NewEvent:
    return NewEvent("agent", "message", {"content": text})


@pytest.fixture
async def history(redis: Redis, names: Names, pg_settings: Settings) -> AsyncIterator[History]:
    assert pg_settings.postgres_url is not None
    archive = Archive(pg_settings.postgres_url, names.schema)
    await archive.open()
    store = Store(redis, names, archive)
    leases = Leases(redis, names, archiving=True)
    cid = uuid.uuid4().hex
    assert (await store.create(cid, "alice", LIMITS, "enqueue")).outcome == "ok"
    await Liveness(redis, names, "worker").heartbeat("w", 30, register=True)
    yield History(store, leases, Archiver(redis, names, archive, "worker"), redis, names, cid)
    await archive.close()


async def logged_and_passivated(history: History) -> list[bytes]:
    """BATCHES batches logged (each with a dedupe key), then passivated: the whole log."""
    await history.claim()
    for batch in range(BATCHES):
        await history.log(f"b{batch}", once=f"batch:{batch}")
    await history.passivate()
    return await history.store.read(history.cid)


async def test_a_passivated_conversation_moves_whole_and_reads_the_same(history: History) -> None:
    assert await history.admit("kept", "hello") == "ok"
    before = await logged_and_passivated(history)
    owed = await history.redis.zrange(history.names.archive_owed(0), 0, -1)

    assert await history.archiver.move(history.cid) == "archived"

    store, cid = history.store, history.cid
    assert owed == [cid.encode()]
    assert await history.redis.zcard(history.names.archive_owed(0)) == 0
    assert await history.redis_keys() == {"log": 0, "once": 0, "actions": 0}
    assert await history.redis.hget(history.names.meta(cid), "archived") == b"36"
    assert await store.read(cid) == before
    record = await store.get(cid)
    assert record is not None and record.last_event_id == 35
    # Every page, wherever it starts and ends, is the same slice.
    for after in (-1, 0, 17, 34, 35):
        for limit in (1, 5, 36):
            assert await store.read(cid, after, limit) == before[after + 1 : after + 1 + limit]


async def test_a_resumed_conversation_continues_after_its_archived_ids(history: History) -> None:
    before = await logged_and_passivated(history)
    assert await history.archiver.move(history.cid) == "archived"

    await history.claim()
    ids = await history.log("after", once="after")
    await history.passivate()
    resumed = await history.store.read(history.cid)
    assert await history.archiver.move(history.cid) == "archived"  # the new tail moves too

    assert ids == [36, 37, 38]
    assert resumed[:36] == before
    assert [orjson.loads(raw)["id"] for raw in resumed] == list(range(39))
    assert await history.store.read(history.cid) == resumed
    assert await history.store.read(history.cid, 34, 3) == resumed[35:38]  # across the old tail
    assert await history.redis.hget(history.names.meta(history.cid), "archived") == b"39"


async def test_dedupe_keys_and_action_ids_hold_across_the_move(history: History) -> None:
    assert await history.admit("a-1", "first") == "ok"
    before = await logged_and_passivated(history)
    assert await history.archiver.move(history.cid) == "archived"
    await history.claim()

    # An append whose dedupe key was archived logs nothing and returns what it logged.
    again = await history.store.append(
        history.cid, history.lease, [message("other").body(history.cid)], once="batch:4"
    )
    assert again.duplicate and again.first_id == 12
    assert again.entries == before[12:15]
    # One whose key is new is logged after the archived ids.
    fresh = await history.store.append(
        history.cid, history.lease, [message("new").body(history.cid)], once="batch:new"
    )
    assert (fresh.duplicate, fresh.first_id) == (False, 36)
    # An action id admitted before the move: the same content again is fine, another is not.
    assert await history.admit("a-1", "first") == "ok"
    assert await history.admit("a-1", "changed") == "conflict"
    assert await history.admit("a-2", "new") == "ok"
    assert await history.admit("a-2", "changed") == "conflict"


async def test_a_move_that_meets_a_resumed_conversation_trims_nothing(history: History) -> None:
    before = await logged_and_passivated(history)
    snapshot = await history.archiver._snapshot(history.cid)
    await history.archiver.archive.insert(
        history.cid, history.archiver._pages(history.cid, snapshot), snapshot.once, {}
    )
    await history.claim()  # resumed between the copy and the trim

    assert await history.archiver._trim(history.cid, snapshot, snapshot.length) == "running"
    assert await history.redis_keys() == {"log": 1, "once": 1, "actions": 0}
    assert (
        await history.redis.zcard(history.names.archive_owed(0)) == 0
    )  # owed again on passivation
    await history.log("more", once="more")
    await history.passivate()
    assert await history.redis.zcard(history.names.archive_owed(0)) == 1
    assert await history.archiver.move(history.cid) == "archived"
    after = await history.store.read(history.cid)
    assert after[:36] == before and len(after) == 39


async def test_input_admitted_during_a_move_keeps_it_from_trimming(history: History) -> None:
    await logged_and_passivated(history)
    snapshot = await history.archiver._snapshot(history.cid)
    assert await history.admit("late", "hi") == "ok"  # admitted while the copy ran

    assert await history.archiver._trim(history.cid, snapshot, snapshot.length) == "changed"
    assert await history.redis_keys() == {"log": 1, "once": 1, "actions": 1}
    assert await history.redis.zcard(history.names.archive_owed(0)) == 1  # still owed
    assert await history.archiver.move(history.cid) == "archived"
    assert await history.admit("late", "other") == "conflict"  # its digest moved too


async def test_two_movers_at_once_move_each_event_once(history: History) -> None:
    before = await logged_and_passivated(history)
    outcomes = await asyncio.gather(*(history.archiver.move(history.cid) for _ in range(4)))

    assert "archived" in outcomes
    assert set(outcomes) <= {"archived", "stale"}
    assert await history.store.read(history.cid) == before
    assert history.store.archive is not None
    assert await history.store.archive.read(history.cid, -1, 100) == before


async def test_a_process_without_the_archive_refuses_archived_history(
    history: History,
) -> None:
    before = await logged_and_passivated(history)
    assert await history.archiver.move(history.cid) == "archived"
    blind = Store(history.redis, history.names)

    with pytest.raises(Unavailable, match="FLEET_POSTGRES_URL"):
        await blind.read(history.cid)
    record = await blind.get(history.cid)
    assert record is not None and record.last_event_id == len(before) - 1
