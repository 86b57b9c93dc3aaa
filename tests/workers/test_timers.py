"""Timers seen from outside: the echo agent's ``/remind`` fires once, as a logged
``timer`` event answered by the agent; a timer wakes a passivated conversation, can be
cancelled, is logged once however often it is fired, and goes with its conversation."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from broker.amqp import Broker
from broker.events import TimerFired
from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import (
    Client,
    EventList,
    answers,
    create_conversation,
    http,
    of_kind,
    replied_to,
    replies,
    status_becomes,
    token,
)


def fired(events: EventList) -> EventList:
    return of_kind(events, "timer")


async def started(fleet: InProcessFleet, **update: object) -> tuple[str, Client]:
    fleet.settings = fleet.settings.model_copy(update=update)
    await fleet.start_gateway()
    await fleet.start_worker()
    await fleet.start_reaper()
    bearer = token(fleet.settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    return cid, await Client().connect(fleet.url, bearer, cid)


async def test_a_reminder_fires_once_and_is_answered(
    fleet: InProcessFleet, redis: Redis, names: Names
) -> None:
    cid, client = await started(fleet)
    await client.act("/remind 0.5 stretch your legs", action_id="r")
    events = await client.wait_for(replied_to("r"))
    assert replies(events) == {"r": ["scheduled"]}
    sent_at = next(e["ts"] for e in events if e["kind"] == "message" and e["source"] == "user")

    events = await client.wait_for(lambda ev: len(replies(ev)) == 2)
    timer = fired(events)[0]
    timer_id = timer["data"]["timer_id"]
    assert timer["source"] == "system"
    assert timer["data"]["payload"] == {"text": "stretch your legs"}
    assert abs(timer["data"]["at"] - (sent_at + 0.5)) < 0.01
    assert timer["ts"] >= timer["data"]["at"]
    assert replies(events)[timer_id] == ["stretch your legs"]
    assert await redis.hlen(names.timers(cid)) == 0
    assert await redis.zcard(names.due(0)) == 0
    await client.close()


async def test_a_timer_wakes_a_passivated_conversation(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    cid, client = await started(fleet, passivate_after=0.3, publish_timeout=2.0)
    await client.act("/remind 4 wake up", action_id="r")  # due once passivated
    await client.wait_for(replied_to("r"))
    await client.close()
    await status_becomes(redis, names, cid, "idle")

    await status_becomes(redis, names, cid, "running")  # the timer claimed it
    client = await Client().connect(fleet.url, token(settings, "alice"), cid)
    events = await client.wait_for(lambda ev: "wake up" in answers(ev))
    assert len(fired(events)) == 1
    await client.close()


async def test_a_cancelled_timer_never_fires(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"agent": "tests.agents:Alarms"})
    _, client = await started(fleet)
    await client.act("set soon 0.6", action_id="set-soon")
    await client.act("set later 0.8", action_id="set-later")
    events = await client.wait_for(lambda ev: len(replies(ev)) == 2)
    soon = replies(events)["set-soon"][0]
    await client.act(f"cancel {soon}", action_id="cancel")
    await client.act("cancel nothing-such", action_id="cancel-again")
    events = await client.wait_for(lambda ev: "ring later" in answers(ev))

    assert replies(events)["cancel"] == ["True"]
    assert replies(events)["cancel-again"] == ["False"]
    assert [t["data"]["payload"] for t in fired(events)] == [{"name": "later"}]
    assert await redis.zcard(names.due(0)) == 0
    await client.close()


async def test_a_timer_fired_twice_is_logged_once(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    # As when a reaper dies after queueing a timer but before marking it fired.
    fleet.settings = settings.model_copy(update={"agent": "tests.agents:Alarms"})
    cid, client = await started(fleet)
    await client.act("set twice 3600", action_id="set")
    timer_id = replies(await client.wait_for(replied_to("set")))["set"][0]
    broker = Broker(settings.amqp_url, names)
    await broker.connect()
    try:
        for _ in range(2):
            await broker.publish_input(cid, TimerFired(timer_id, {"name": "twice"}, 0.0))
    finally:
        await broker.close()
    await client.act("set marker 3600", action_id="marker")  # queued behind both firings
    await client.wait_for(replied_to("marker"))
    await client.wait_for(lambda ev: "ring twice" in answers(ev))

    assert len(fired(client.events)) == 1
    assert answers(client.events).count("ring twice") == 1
    assert not await redis.hexists(names.timers(cid), timer_id)
    await client.close()


async def test_closing_a_conversation_forgets_its_timers(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    cid, client = await started(fleet)
    await client.act("/remind 3600 never", action_id="r")
    await client.wait_for(replied_to("r"))
    assert await redis.zcard(names.due(0)) == 1
    async with http(fleet.url, token(settings, "alice")) as api:
        assert (await api.delete(f"/api/conversations/{cid}")).status_code == 202
    await status_becomes(redis, names, cid, "closed")
    async with asyncio.timeout(5):
        while await redis.zcard(names.due(0)) or await redis.exists(names.timers(cid)):
            await asyncio.sleep(0.05)
    await client.close()


async def test_a_bad_reminder_is_answered_with_its_usage(fleet: InProcessFleet) -> None:
    _, client = await started(fleet)
    await client.act("/remind soon do it", action_id="bad")
    events = await client.wait_for(replied_to("bad"))
    assert replies(events) == {"bad": ["usage: /remind SECONDS TEXT"]}
    await client.close()
