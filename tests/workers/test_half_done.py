"""Input whose handling is cut short after it was logged is still answered, once: the
broker refusing the live events of an append (the scribe retries them), and a log
append whose reply is lost (the input comes again and finds itself logged)."""

from __future__ import annotations

from typing import Any

from broker.settings import Settings
from broker.store import Appended
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, replies, token


async def test_live_events_refused_once_are_sent_again(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    publish = worker.broker.publish_events
    refused: list[int] = []

    async def refuse_first(cid: str, entries: Any) -> None:
        if not refused:
            refused.append(len(entries))
            raise ConnectionError("the broker went away")  # as a broker restart does
        await publish(cid, entries)

    worker.broker.publish_events = refuse_first  # type: ignore[method-assign]
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    await client.act("hello", action_id="a-1")
    events = await client.wait_for(lambda ev: "a-1" in replies(ev))
    await client.close()

    assert refused == [4]  # the turn's start and its answer (one message), refused once
    assert replies(events) == {"a-1": ["hello"]}


async def test_an_append_whose_reply_is_lost_is_answered_once(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    worker = await fleet.start_worker()
    append = worker.store.append
    lost: list[str] = []

    async def lose_first_reply(
        cid: str, lease: str, bodies: Any, once: str = "", *args: Any
    ) -> Appended:
        appended = await append(cid, lease, bodies, once, *args)
        if once.startswith("action:") and not lost:
            lost.append(once)
            raise ConnectionError("the reply was lost")  # logged, but the caller cannot know
        return appended

    worker.store.append = lose_first_reply  # type: ignore[method-assign,assignment]
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    await client.act("hello", action_id="a-1")
    events = await client.wait_for(lambda ev: "a-1" in replies(ev))
    await client.act("again", action_id="a-2")
    events = await client.wait_for(lambda ev: "a-2" in replies(ev))
    await client.close()

    assert lost == ["action:a-1"]
    assert replies(events) == {"a-1": ["hello"], "a-2": ["again"]}
    assert [e["data"]["action_id"] for e in events if e["source"] == "user"] == ["a-1", "a-2"]
