"""Admission refuses what would corrupt or bloat a conversation: an action id reused for
other content, input past the log's cap, payloads beyond the user's byte rate."""

from __future__ import annotations

from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, replies, token


async def test_an_action_id_is_admitted_with_one_content_only(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)

    first = await client.act("the original", action_id="a-1")
    again = await client.act("the original", action_id="a-1")  # a retry: fine
    other = await client.act("something else", action_id="a-1")
    async with http(fleet.url, bearer) as api:
        body = {"kind": "message", "data": {"content": "over http"}, "action_id": "a-1"}
        over_http = await api.post(f"/api/conversations/{cid}/actions", json=body)

    assert first["ok"] and again["ok"]
    assert other == {
        "ok": False,
        "error": {
            "code": "conflict",
            "message": "this action_id was already used for another action",
        },
    }
    assert (over_http.status_code, over_http.json()["error"]["code"]) == (409, "conflict")
    await client.wait_for(lambda ev: "a-1" in replies(ev))
    assert replies(client.events)["a-1"] == ["the original"]
    await client.close()


async def test_a_full_log_takes_no_more_input(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"max_log_events": 8})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    for i in range(2):  # each answered action logs four events
        assert (await client.act(f"m{i}", action_id=f"m{i}"))["ok"]
    await client.wait_for(lambda ev: len(ev) >= 8)

    full = await client.act("one more")

    assert full["error"]["code"] == "conversation_full"
    assert "8 events" in full["error"]["message"]
    assert await redis.llen(names.log(cid)) == 8
    assert int(await redis.hget(names.meta(cid), "log_bytes") or 0) == sum(
        len(e) for e in await redis.lrange(names.log(cid), 0, -1)
    )
    await client.close()


async def test_a_log_over_its_byte_cap_takes_no_more_input(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"max_log_bytes": 4096})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    assert (await client.act("x" * 3000, action_id="big"))["ok"]  # logged twice: > 4 KiB
    await client.wait_for(lambda ev: "big" in replies(ev))
    assert (await client.act("small"))["error"]["code"] == "conversation_full"
    await client.close()


async def test_payload_bytes_count_against_the_rate(
    fleet: InProcessFleet, settings: Settings
) -> None:
    # 10 requests at once; each 4 KiB of payload counts as one more.
    fleet.settings = settings.model_copy(
        update={"rate_limit": 0.5, "rate_burst": 10, "rate_bytes": 4096}
    )
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)  # 1 of the burst
    client = await Client().connect(fleet.url, bearer, cid)

    heavy = await client.act("x" * 20_000)  # counts as 5 (20 KB / 4 KiB = 4, + 1)
    small = [await client.act(f"s{i}") for i in range(5)]

    assert heavy["ok"]
    assert [a["ok"] for a in small] == [True, True, True, True, False]
    assert small[-1]["error"]["code"] == "rate_limited"
    await client.close()
