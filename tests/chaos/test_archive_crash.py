"""A mover killed (SIGKILL) between its copy to PostgreSQL and its trim of Redis: the
move is finished later by someone else, and no event is lost or doubled."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
from redis.asyncio import Redis

from broker import postgres
from broker.names import Names
from broker.redis import text
from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.support import archived_becomes, create_conversation, http, say, token

CONVERSATIONS = 5
EVENTS = 8  # two turns of four events each
FAST = {
    "FLEET_PASSIVATE_AFTER": "2.0",  # after every turn below
    "FLEET_PUBLISH_TIMEOUT": "1.0",
    "FLEET_ARCHIVE_RETRY_AFTER": "1.0",
}


async def archived_rows(settings: Settings, cid: str) -> list[tuple[int, str]]:
    assert settings.postgres_url is not None
    conn = await asyncpg.connect(settings.postgres_url)
    try:
        schema = postgres.quote(settings.names.schema)
        rows = await conn.fetch(
            f"SELECT id, body FROM {schema}.events WHERE conversation = $1 ORDER BY id", cid
        )
    finally:
        await conn.close()
    return [(row["id"], row["body"]) for row in rows]


async def test_a_mover_killed_between_copy_and_trim(
    pg_settings: Settings, redis: Redis, names: Names, tmp_path: Path
) -> None:
    crashing = {**FAST, "CRASH_MARKERS": str(tmp_path)}
    async with LocalFleet(pg_settings, **crashing) as fleet:
        _, url = await fleet.gateway()
        victim, _ = await fleet.worker(FLEET_AGENT="tests.archive_crash:EpochEcho")
        bearer = token(pg_settings, "alice")
        cids = [
            await create_conversation(url, bearer, initial="first") for _ in range(CONVERSATIONS)
        ]
        for cid in cids:
            await say(url, bearer, cid, "second")
        async with http(url, bearer) as api:
            before = {}
            for cid in cids:
                async with asyncio.timeout(15):
                    while len(events := await page(api, cid)) < EVENTS:
                        await asyncio.sleep(0.05)
                before[cid] = events

        # The first move to reach its trim kills the worker: copied, not trimmed.
        assert await victim.wait(30) == -signal.SIGKILL
        assert (tmp_path / "archive-before-trim").exists()
        halfway = [
            cid
            for cid in cids
            if len(await archived_rows(pg_settings, cid)) == EVENTS
            and await redis.llen(names.log(cid)) == EVENTS
        ]
        assert halfway, "no move stopped between its copy and its trim"
        for cid in halfway:
            assert await redis.hget(names.meta(cid), "archived") is None
        owed = cast(
            list[bytes], await redis.zrange(names.archive_owed(names.group("alice")), 0, -1)
        )
        assert set(halfway) <= {text(cid) for cid in owed}

        # The reaper finishes what is owed; a new worker takes what the victim still ran.
        await fleet.reaper()
        await fleet.worker(FLEET_AGENT="tests.agents:EpochEcho")
        for cid in cids:
            await archived_becomes(redis, names, cid, EVENTS)
        assert await redis.zcard(names.archive_owed(names.group("alice"))) == 0

        async with http(url, bearer) as api:
            for cid in cids:
                rows = await archived_rows(pg_settings, cid)
                assert [event_id for event_id, _ in rows] == list(range(EVENTS))  # once each
                assert await page(api, cid) == before[cid]  # nothing lost, nothing changed
                assert not await redis.exists(names.log(cid))
            # A resumed conversation logs after its archived ids.
            await say(url, bearer, cids[0], "third")
            async with asyncio.timeout(15):
                while len(events := await page(api, cids[0])) < EVENTS + 4:
                    await asyncio.sleep(0.05)
        assert [e["id"] for e in events] == list(range(EVENTS + 4))
        assert events[:EVENTS] == before[cids[0]]
        assert events[EVENTS]["data"]["content"] == "third"


async def page(api: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    """The conversation's events, over HTTP."""
    events: list[dict[str, Any]] = (await api.get(f"/api/conversations/{cid}/events")).json()[
        "events"
    ]
    return events
