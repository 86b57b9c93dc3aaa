"""The live feed on a real gateway, with the test as the conversation's owner: it logs
events under a valid lease and decides what goes out live, so gaps and duplicates
happen on purpose, not by luck. Clients get every id once, in order, whatever comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from broker.amqp import Broker
from broker.events import NewEvent, with_id
from broker.leases import Leases
from broker.liveness import Liveness
from broker.names import Names, lease_value
from broker.settings import Settings
from broker.store import Store
from gateway.feed import REPLAY_PAGE
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, token


class Owner:
    """A worker's part, played by the test: a live worker holding the conversation's
    lease, logging through the fenced append and publishing only what it chooses."""

    def __init__(self, redis: Redis, names: Names, broker: Broker) -> None:
        self.redis = redis
        self.names = names
        self.broker = broker
        self.store = Store(redis, names)
        self.lease = ""

    async def claim(self, cid: str, worker_id: str = "test-owner") -> None:
        assert await Liveness(self.redis, self.names, "worker").heartbeat(
            worker_id, 60, register=True
        )
        claim = await Leases(self.redis, self.names).claim(cid, worker_id, 100)
        assert claim.outcome == "claimed"
        self.lease = lease_value(worker_id, claim.epoch)

    async def log(self, cid: str, *contents: str) -> list[bytes]:
        """Log one agent message per content; the entries as the log holds them."""
        bodies = [NewEvent("agent", "message", {"content": c}).body(cid) for c in contents]
        appended = await self.store.append(cid, self.lease, bodies)
        return [with_id(appended.first_id + i, body) for i, body in enumerate(bodies)]

    async def publish(self, cid: str, entries: list[bytes]) -> None:
        await self.broker.publish_events(cid, entries)


@pytest.fixture
async def owner(settings: Settings, redis: Redis, names: Names) -> AsyncIterator[Owner]:
    broker = Broker(settings.amqp_url, names, name="test-owner")
    await broker.connect()
    yield Owner(redis, names, broker)
    await broker.close()


def ids(events: list[dict[str, object]]) -> list[object]:
    return [event["id"] for event in events]


async def test_a_live_event_ahead_of_the_client_is_preceded_by_the_gap_from_the_log(
    fleet: InProcessFleet, settings: Settings, owner: Owner
) -> None:
    """Events 0, 1, 2 logged, only 2 published live (its owner died between append and
    publish, or an unconfirmed publish was lost): the client still gets 0, 1, 2."""
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await owner.claim(cid)
    await owner.log(cid, "zero")
    client = await Client().connect(fleet.url, bearer, cid)
    # Replayed: the client's cursor is at 0, and its replay is over.
    await client.wait_for(lambda ev: ids(ev) == [0])

    _, two = await owner.log(cid, "one", "two")
    await owner.publish(cid, [two])

    events = await client.wait_for(lambda ev: bool(ev) and ev[-1]["id"] == 2)
    assert ids(events) == [0, 1, 2], f"the gap was not filled from the log: {events}"
    assert [e["data"]["content"] for e in events] == ["zero", "one", "two"]
    await client.close()


async def test_events_that_arrive_live_during_the_replay_are_sent_once(
    fleet: InProcessFleet,
    settings: Settings,
    owner: Owner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client joins the live stream, then replays the log: events published in
    between come both ways. Here they always do: the replay waits until they came."""
    gateway = await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await owner.claim(cid)
    entries = await owner.log(cid, "zero", "one", "two")

    read = Store.read
    raced = asyncio.Event()

    async def read_once_they_came_live(
        store: Store, conversation: str, after: int = -1, limit: int | None = None
    ) -> list[bytes]:
        if conversation == cid and (after, limit) == (-1, REPLAY_PAGE) and not raced.is_set():
            raced.set()  # the client's replay: it is subscribed; its live events come first
            received = gateway.feed.received
            await owner.publish(cid, entries)
            async with asyncio.timeout(10):
                while gateway.feed.received < received + len(entries):
                    await asyncio.sleep(0.01)
        return await read(store, conversation, after, limit)

    monkeypatch.setattr(Store, "read", read_once_they_came_live)
    client = await Client().connect(fleet.url, bearer, cid)
    await client.wait_for(lambda ev: len(ev) >= 3)
    assert raced.is_set()

    await owner.publish(cid, await owner.log(cid, "three"))
    events = await client.wait_for(lambda ev: bool(ev) and ev[-1]["id"] == 3)
    assert ids(events) == [0, 1, 2, 3], f"events sent twice (replayed, then live): {events}"
    await client.close()
