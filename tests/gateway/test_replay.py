"""Reconnecting to another gateway: exactly the missed events, in order, then live ones."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, token

COUNT = 120
LAST = COUNT + 2  # the message, running, COUNT answers, awaiting: ids 0 to COUNT + 2


async def test_reconnect_to_a_different_gateway_while_the_agent_keeps_emitting(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"agent": "tests.agents:Chatty"})
    other_port = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(other_port)
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    first = await Client().connect(fleet.url, bearer, cid)
    assert (await first.act(f"count {COUNT}", action_id="c"))["ok"]
    seen = await first.wait_for(lambda ev: len(ev) >= 10)
    await first.close()
    last = seen[-1]["id"]
    # The agent goes on emitting while nobody listens.
    async with asyncio.timeout(10):
        while await redis.llen(names.log(cid)) < last + 20:
            await asyncio.sleep(0.01)

    second = await Client().connect(f"http://127.0.0.1:{other_port}", bearer, cid, last)
    logged_at_connect = await redis.llen(names.log(cid))
    rest = await second.wait_for(lambda ev: bool(ev) and ev[-1]["id"] == LAST)

    ids = [e["id"] for e in seen + rest]
    assert ids == list(range(LAST + 1))
    contents = [e["data"]["content"] for e in seen + rest if e["kind"] == "message"][1:]
    assert contents == [str(i) for i in range(COUNT)]
    # What was logged by the reconnect was replayed; the agent was still going, so
    # the rest arrived live.
    assert last + 20 <= logged_at_connect < LAST + 1
    await second.close()


async def test_every_client_gets_every_event_and_gateways_only_what_they_serve(
    fleet: InProcessFleet, settings: Settings
) -> None:
    other_port = free_port()
    one = await fleet.start_gateway()
    two = await fleet.start_gateway(other_port)
    await fleet.start_worker()
    bearer = token(settings, "alice")
    shared = await create_conversation(fleet.url, bearer)
    private = await create_conversation(fleet.url, bearer)
    on_one = await Client().connect(fleet.url, bearer, shared)
    on_two = await Client().connect(f"http://127.0.0.1:{other_port}", bearer, shared)
    only_on_one = await Client().connect(fleet.url, bearer, private)

    assert (await on_two.act("to both", action_id="both"))["ok"]
    assert (await only_on_one.act("to one", action_id="one"))["ok"]
    both = [await c.wait_for(lambda ev: len(ev) >= 4) for c in (on_one, on_two)]
    await only_on_one.wait_for(lambda ev: len(ev) >= 4)

    assert both[0] == both[1]
    assert [e["data"].get("content") for e in both[0]][:3:2] == ["to both", "to both"]
    # Gateway two has no client of `private`: it was never sent its events.
    assert (one.feed.received, two.feed.received) == (8, 4)
    for client in (on_one, on_two, only_on_one):
        await client.close()
