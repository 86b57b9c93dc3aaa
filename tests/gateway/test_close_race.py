"""An action admitted while its conversation runs, published after it was closed for
good (its queue deleted): refused, never acknowledged into a queue that is not there."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from broker.events import Action, CloseMarker, TimerFired
from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, replied_to, status_becomes, token


async def test_an_action_published_after_the_close_is_refused_not_dropped(
    fleet: InProcessFleet,
    settings: Settings,
    redis: Redis,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = await fleet.start_gateway()
    worker = await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    assert (await client.act("one", action_id="one"))["ok"]
    await client.wait_for(replied_to("one"))

    publish = gateway.broker.publish_input

    async def close_first(target: str, item: Action | CloseMarker | TimerFired) -> None:
        """Admitted (the record said running); closed for good before it is published."""
        if isinstance(item, Action) and item.action_id == "late":
            assert await redis.hget(names.meta(cid), "status") == b"running"
            async with http(fleet.url, bearer) as api:
                assert (await api.delete(f"/api/conversations/{cid}")).status_code == 202
            await status_becomes(redis, names, cid, "closed")
            assert await worker.broker.queue_depth(cid) is None
        await publish(target, item)

    monkeypatch.setattr(gateway.broker, "publish_input", close_first)
    ack = await client.act("late", action_id="late")

    assert not ack["ok"], f"acknowledged into a deleted queue: {ack}"
    assert ack["error"]["code"] == "conversation_closed"
    assert await redis.hget(names.meta(cid), "status") == b"closed"
    assert await worker.broker.queue_depth(cid) is None  # not declared again
    logged = await redis.lrange(names.log(cid), 0, -1)
    assert not any(b'"late"' in entry for entry in logged)
    await client.close()
