"""Owner queries (``POST /api/conversations/{id}/completions``) through a real gateway,
real workers and RabbitMQ, answered by the fake LLM: by the owner, with its model;
after claiming a passivated conversation; beside a streaming turn; 503 when nobody
answers in time (and never answered late); 404, 400, 501 and LLM errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from broker.names import Names
from broker.settings import Settings
from fleet.fake_llm.server import FakeLLM
from tests.conftest import InProcessFleet
from tests.llm import all_requests, llm_agent, marker, requests_for, script, serving
from tests.support import Client, create_conversation, http, replied_to, status_becomes, token


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with serving() as server:
        yield server


async def ask(url: str, bearer: str, cid: str, body: Any, timeout: float = 15) -> httpx.Response:
    async with http(url, bearer) as api:
        return await api.post(f"/api/conversations/{cid}/completions", json=body, timeout=timeout)


def messages(mark: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": f"{mark} what is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "and of Italy?"},
    ]


async def test_the_owner_answers_with_the_conversations_model(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    # Two workers with different models: the answer's model says which one answered.
    one = await fleet.start_worker(**llm_agent(fake_llm, "model-one"))
    two = await fleet.start_worker(**llm_agent(fake_llm, "model-two"))
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await status_becomes(redis, names, cid, "running")
    owner = await redis.hget(names.meta(cid), "owner")
    models = {one.worker_id.encode(): "model-one", two.worker_id.encode(): "model-two"}
    assert isinstance(owner, bytes)
    model = models[owner]
    mark = marker()
    await script(fake_llm, mark, {"content": "Rome."})

    response = await ask(fleet.url, bearer, cid, {"messages": messages(mark)})

    assert response.status_code == 200, response.text
    assert response.json() == {"content": "Rome."}
    [request] = await requests_for(fake_llm, mark)
    assert request["body"]["model"] == model
    assert request["body"]["messages"] == messages(mark)  # as sent: nothing added
    assert "tools" not in request["body"]
    assert await redis.llen(names.log(cid)) == 0  # a query is not a turn: nothing logged


async def test_a_passivated_conversation_is_claimed_then_answers(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"passivate_after": 0.5, "publish_timeout": 2.0})
    await fleet.start_gateway()
    worker = await fleet.start_worker(**llm_agent(fake_llm))
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await status_becomes(redis, names, cid, "running")
    epoch = int(await redis.get(names.epoch(cid)) or 0)
    await status_becomes(redis, names, cid, "idle")
    assert cid not in worker.loops
    mark = marker()
    await script(fake_llm, mark, {"content": "awake"})

    response = await ask(fleet.url, bearer, cid, {"messages": messages(mark)})

    assert response.status_code == 200, response.text
    assert response.json() == {"content": "awake"}
    assert int(await redis.get(names.epoch(cid)) or 0) > epoch  # claimed again first
    assert cid in worker.loops


async def test_no_owner_answers_within_the_timeout_and_none_answers_later(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM
) -> None:
    timeout = 0.5
    fleet.settings = settings.model_copy(update={"completion_timeout": timeout})
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    mark = marker()

    began = time.monotonic()
    response = await ask(fleet.url, bearer, cid, {"messages": messages(mark)})
    waited = time.monotonic() - began

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "1"
    assert timeout <= waited < timeout + 2

    # A worker that comes later claims the conversation and runs the turn sent after
    # the query; the query expired in the queue: the LLM is never asked it.
    await fleet.start_worker(**llm_agent(fake_llm))
    client = await Client().connect(fleet.url, bearer, cid)
    await client.act("hello after", action_id="after")
    await client.wait_for(replied_to("after"), timeout=15)
    await client.close()
    assert await requests_for(fake_llm, mark) == []
    sent = [m["content"] for r in await all_requests(fake_llm) for m in r["body"]["messages"]]
    assert not any(mark in content for content in sent)


async def test_a_completion_is_answered_while_a_turn_streams(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker(**llm_agent(fake_llm))
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    turn, query = marker(), marker()
    words = " ".join(f"w{i}" for i in range(40))
    await script(fake_llm, turn, {"content": words, "chunk": "word", "delay": 0.1})
    await script(fake_llm, query, {"content": "meanwhile"})
    await client.act(f"{turn} talk slowly", action_id="slow")
    await client.wait_for(lambda _: len(client.frames) >= 2)

    began = time.monotonic()
    response = await ask(fleet.url, bearer, cid, {"messages": messages(query)})
    took = time.monotonic() - began
    turn_done_then = replied_to("slow")(client.events)

    assert response.status_code == 200, response.text
    assert response.json() == {"content": "meanwhile"}
    assert not turn_done_then  # not queued behind the turn (4 s of streaming)
    assert took < 2
    events = await client.wait_for(replied_to("slow"), timeout=15)
    await client.close()
    reply = next(e for e in events if e["data"].get("in_reply_to") == "slow")
    assert reply["data"]["content"] == words  # the turn went on undisturbed


async def test_another_users_conversation_is_not_found(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker(**llm_agent(fake_llm))
    cid = await create_conversation(fleet.url, token(settings, "alice"))
    mallory = token(settings, "mallory")

    theirs = await ask(fleet.url, mallory, cid, {"messages": messages(marker())})
    unknown = await ask(fleet.url, mallory, "no-such-conversation", {"messages": messages("x")})

    for response in (theirs, unknown):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert await all_requests(fake_llm) == []


@pytest.mark.parametrize(
    ("body", "names_it"),
    [
        ([], "body must be an object"),
        ({}, "messages must be a non-empty list"),
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": "hello"}, "messages must be a non-empty list"),
        ({"messages": ["hello"]}, "messages[0] must be an object"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role must be one of"),
        ({"messages": [{"content": "x"}]}, "messages[0].role must be one of"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "user"}]},
            "messages[1].content must be a string",
        ),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content must be a string"),
        (
            {"messages": [{"role": "user", "content": "x", "name": "n"}]},
            "messages[0] has unknown fields: name",
        ),
        ({"messages": [{"role": "user", "content": "x"}] * 257}, "at most 256 messages"),
    ],
)
async def test_bad_bodies_are_refused_naming_the_field(
    fleet: InProcessFleet,
    settings: Settings,
    fake_llm: FakeLLM,
    redis: Redis,
    names: Names,
    body: Any,
    names_it: str,
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker(**llm_agent(fake_llm))
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await status_becomes(redis, names, cid, "running")
    meta = await redis.hgetall(names.meta(cid))

    with capture_logs() as logs:
        response = await ask(fleet.url, bearer, cid, body)

    assert response.status_code == 400
    error = response.json()
    assert error["ok"] is False and error["error"]["code"] == "bad_request"
    assert names_it in error["error"]["message"]
    assert [line["event"] for line in logs if line["log_level"] != "debug"] == ["request_refused"]
    assert await redis.hgetall(names.meta(cid)) == meta  # nothing else changed
    assert await all_requests(fake_llm) == []


async def test_a_body_that_is_not_json_or_too_large_is_refused(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    path = f"/api/conversations/{cid}/completions"
    huge = {"messages": [{"role": "user", "content": "x" * settings.max_payload_bytes}]}

    async with http(fleet.url, bearer) as api:
        not_json = await api.post(path, content=b"{nope")
        too_large = await api.post(path, json=huge)

    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "bad_request"
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "payload_too_large"


async def test_an_agent_that_cannot_complete_says_so(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()  # the echo agent: turns only
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    response = await ask(fleet.url, bearer, cid, {"messages": messages(marker())})

    assert response.status_code == 501
    assert response.json()["error"]["code"] == "not_supported"


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        ({"status": 503, "error": {"message": "overloaded"}}, 502, "llm_unavailable"),
        ({"status": 429, "error": {"message": "slow down"}}, 429, "llm_rate_limited"),
        ({"status": 404, "error": {"message": "no such model"}}, 502, "llm_bad_request"),
    ],
)
async def test_llm_failures_keep_their_llm_codes(
    fleet: InProcessFleet,
    settings: Settings,
    fake_llm: FakeLLM,
    reply: dict[str, Any],
    status: int,
    code: str,
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker(**llm_agent(fake_llm))
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    mark = marker()
    await script(fake_llm, mark, reply, {"content": "fine again"})

    failed = await ask(fleet.url, bearer, cid, {"messages": messages(mark)})
    again = await ask(fleet.url, bearer, cid, {"messages": messages(mark)})

    assert failed.status_code == status, failed.text
    assert failed.json()["error"]["code"] == code
    if status == 429:
        assert failed.headers["Retry-After"] == "1"
    assert again.json() == {"content": "fine again"}  # the conversation goes on


async def test_a_query_in_flight_when_its_owner_drains_is_told_to_retry(
    fleet: InProcessFleet, settings: Settings, fake_llm: FakeLLM, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    worker = await fleet.start_worker(**llm_agent(fake_llm))
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await status_becomes(redis, names, cid, "running")
    mark = marker()
    await script(fake_llm, mark, {"hang": 30})
    asked = asyncio.create_task(ask(fleet.url, bearer, cid, {"messages": messages(mark)}))
    async with asyncio.timeout(10):
        while not await requests_for(fake_llm, mark):
            await asyncio.sleep(0.02)

    began = time.monotonic()
    worker.stop()  # drain: the query's LLM call is cancelled, its asker told at once
    response = await asyncio.wait_for(asked, 10)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "1"
    assert time.monotonic() - began < 5  # not the 60 s completion timeout
    async with asyncio.timeout(10):
        while not (await requests_for(fake_llm, mark))[0]["disconnected"]:
            await asyncio.sleep(0.02)
