"""Replay and paging across the archive boundary: a conversation passivated and moved
to PostgreSQL, then resumed, is read as one log whether a client starts before, at
or after the boundary, then goes on live with no gap and no duplicate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    EventList,
    archived_becomes,
    create_conversation,
    http,
    replied_to,
    say,
    status_becomes,
    token,
)

FAST = {"passivate_after": 0.5, "publish_timeout": 1.0}
ARCHIVED = 12  # three turns of four events: ids 0..11 move to PostgreSQL
TAIL = 16  # one more turn, in Redis: ids 12..15


async def archived_then_resumed(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> tuple[str, str, Client]:
    """A conversation whose first ARCHIVED events are in PostgreSQL and the next four in
    Redis, kept running by a connected client (returned)."""
    fleet.settings = settings.model_copy(update=FAST)
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer, initial="m0")
    watcher = await Client().connect(fleet.url, bearer, cid)
    for content in ("m1", "m2"):
        await say(fleet.url, bearer, cid, content)
    await watcher.wait_for(lambda ev: len(ev) == ARCHIVED)
    await watcher.close()
    await status_becomes(redis, names, cid, "idle")
    await archived_becomes(redis, names, cid, ARCHIVED)
    assert not await redis.exists(names.log(cid))

    keeper = await Client().connect(fleet.url, bearer, cid, latest_event_id=ARCHIVED - 1)
    await say(fleet.url, bearer, cid, "m3")
    await keeper.wait_for(lambda ev: len(ev) == TAIL - ARCHIVED)
    assert await redis.llen(names.log(cid)) == TAIL - ARCHIVED
    return cid, bearer, keeper


def replayed(count: int) -> Callable[[EventList], bool]:
    return lambda events: len(events) == count


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [event["id"] for event in events]


async def test_clients_replay_from_before_at_and_after_the_boundary_then_live(
    fleet: InProcessFleet, pg_settings: Settings, redis: Redis, names: Names
) -> None:
    cid, bearer, keeper = await archived_then_resumed(fleet, pg_settings, redis, names)
    starts = [-1, 0, 5, ARCHIVED - 2, ARCHIVED - 1, ARCHIVED, TAIL - 2, TAIL - 1]
    clients = {latest: await Client().connect(fleet.url, bearer, cid, latest) for latest in starts}
    for latest, client in clients.items():
        await client.wait_for(replayed(TAIL - 1 - latest))
    await say(fleet.url, bearer, cid, "m4")  # live, after the replay
    for client in clients.values():
        await client.wait_for(replied_to("m4"))
        await client.wait_for(lambda ev: bool(ev) and ev[-1]["id"] == TAIL + 3)

    everything = clients[-1].events
    assert ids(everything) == list(range(TAIL + 4))
    said = [e["data"]["content"] for e in everything if e["source"] == "user"]
    assert said == ["m0", "m1", "m2", "m3", "m4"]
    for latest, client in clients.items():
        assert ids(client.events) == list(range(latest + 1, TAIL + 4)), latest
        assert client.events == everything[latest + 1 :]  # the same events, byte for byte
    for client in [keeper, *clients.values()]:
        await client.close()


async def test_event_pages_span_the_boundary(
    fleet: InProcessFleet, pg_settings: Settings, redis: Redis, names: Names
) -> None:
    cid, bearer, keeper = await archived_then_resumed(fleet, pg_settings, redis, names)
    async with http(fleet.url, bearer) as api:
        url = f"/api/conversations/{cid}/events"
        whole = (await api.get(url)).json()["events"]
        spanning = (await api.get(f"{url}?after=9&limit=5")).json()["events"]
        at = (await api.get(f"{url}?after={ARCHIVED - 1}&limit=2")).json()["events"]
        walked: list[dict[str, Any]] = []
        after = -1
        while page := (await api.get(f"{url}?after={after}&limit=3")).json()["events"]:
            walked += page
            after = page[-1]["id"]
        record = (await api.get(f"/api/conversations/{cid}")).json()

    assert ids(whole) == list(range(TAIL))
    assert ids(spanning) == [10, 11, 12, 13, 14]
    assert ids(at) == [ARCHIVED, ARCHIVED + 1]
    assert walked == whole
    assert spanning == whole[10:15]
    assert record["last_event_id"] == TAIL - 1
    await keeper.close()
