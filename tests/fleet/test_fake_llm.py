"""``fleet fake-llm`` as its users see it: the official ``openai`` SDK talks to it, tests
script and observe it over plain HTTP (``/fake/*``), from the same process or another."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from fleet.fake_llm.server import FakeLLM
from fleet.harness import FleetProcess, free_port
from tests.conftest import wait_for_event

PACE = 40.0  # words per second of the default reply, in these tests
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
            "strict": True,  # the SDK's streaming helper parses strict tools' arguments
        },
    }
]
Record = dict[str, Any]
T = TypeVar("T")


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    server = FakeLLM("127.0.0.1", free_port(), PACE)
    task = asyncio.create_task(server.main())
    await wait_for_event(server.listening, task)
    yield server
    server.stop()
    await task


@pytest.fixture
async def http(fake: FakeLLM) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url) as client:
        yield client


@pytest.fixture
async def llm(fake: FakeLLM) -> AsyncIterator[AsyncOpenAI]:
    # No retries: each request consumes one scripted reply, and tests count them.
    async with AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="any", max_retries=0) as client:
        yield client


def marker() -> str:
    return f"marker-{secrets.token_hex(4)}"


def said(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def script(http: httpx.AsyncClient, match: str | None, *replies: Record) -> Record:
    response = await http.post("/fake/script", json={"match": match, "replies": list(replies)})
    assert response.status_code == 201, response.text
    created: Record = response.json()
    return created


async def recorded(http: httpx.AsyncClient) -> list[Record]:
    response = await http.get("/fake/requests")
    response.raise_for_status()
    requests: list[Record] = response.json()["requests"]
    return requests


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 5.0) -> T:
    """Poll ``check`` until it returns something, failing after ``timeout``."""
    async with asyncio.timeout(timeout):
        while (found := await check()) is None:
            await asyncio.sleep(0.02)
    return found


async def stream_chunks(llm: AsyncOpenAI, text: str, **options: Any) -> list[ChatCompletionChunk]:
    stream = await llm.chat.completions.create(
        model="gpt-test", messages=said(text), stream=True, **options
    )
    return [chunk async for chunk in stream]


def contents(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


@pytest.mark.parametrize(
    ("chunk", "pieces"),
    [
        ("word", ["Hello ", "brave ", "new ", "world"]),
        ("char", list("Hi there")),
        (4, ["Hell", "o br", "ave ", "new ", "worl", "d"]),
    ],
)
async def test_streamed_text_arrives_in_the_scripted_chunks(
    llm: AsyncOpenAI, http: httpx.AsyncClient, chunk: str | int, pieces: list[str]
) -> None:
    mark = marker()
    created = await script(http, mark, {"content": "".join(pieces), "chunk": chunk})

    chunks = await stream_chunks(llm, f"{mark} hi", stream_options={"include_usage": True})

    assert contents(chunks) == pieces
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "gpt-test"
    [record] = await recorded(http)
    assert record["body"]["messages"] == said(f"{mark} hi")
    assert record["body"]["stream"] is True
    assert (record["script_id"], record["match"], record["reply_index"]) == (created["id"], mark, 0)
    assert record["chunks_sent"] == len(pieces) + 2  # and the finish reason, and the usage
    assert record["completed"] and not record["disconnected"] and record["status"] == 200


async def test_tool_calls_stream_and_the_sdk_assembles_them(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    mark = marker()
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
        {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "K"}', "id": "call_oslo"},
    ]
    await script(
        http,
        mark,
        {"content": "Let me look.", "tool_calls": calls, "chunk": 5},
        {"content": "Sunny in Paris, rain in Oslo."},
    )
    messages = said(f"{mark} weather in Paris and Oslo?")

    async with llm.chat.completions.stream(
        model="gpt-test", messages=messages, tools=TOOLS
    ) as stream:
        argument_pieces = [
            call.function.arguments
            async for event in stream
            if event.type == "chunk" and event.chunk.choices
            for call in event.chunk.choices[0].delta.tool_calls or []
            if call.function and call.function.arguments
        ]
        completion = await stream.get_final_completion()

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    assert choice.message.tool_calls is not None
    paris, oslo = choice.message.tool_calls
    assert paris.type == "function" and oslo.type == "function"
    assert paris.function.name == "get_weather" and paris.id.startswith("call_")
    assert json.loads(paris.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert (oslo.id, oslo.function.arguments) == ("call_oslo", '{"city": "Oslo", "unit": "K"}')
    assert (
        argument_pieces
        == [  # in 5-character pieces
            arguments[start : start + 5]
            for arguments in (paris.function.arguments, oslo.function.arguments)
            for start in range(0, len(arguments), 5)
        ]
    )

    # The tool results go back in the same conversation: the marker is in its history.
    answered: list[Any] = [
        *messages,
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [
                call.model_dump(include={"id", "type", "function"}) for call in (paris, oslo)
            ],
        },
        {"role": "tool", "tool_call_id": paris.id, "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_oslo", "content": "rain"},
    ]
    final = await llm.chat.completions.create(model="gpt-test", messages=answered, tools=TOOLS)
    assert final.choices[0].message.content == "Sunny in Paris, rain in Oslo."
    first, second = await recorded(http)
    assert second["body"]["messages"][3]["tool_call_id"] == paris.id
    assert (first["reply_index"], second["reply_index"]) == (0, 1)


async def test_non_streamed_answers_are_whole_completions(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    await script(
        http,
        None,
        {"content": "Just text."},
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]},
    )
    text = await llm.chat.completions.create(model="gpt-test", messages=said("a"))
    assert text.object == "chat.completion"
    assert text.choices[0].message.content == "Just text."
    assert text.choices[0].finish_reason == "stop"
    assert text.usage is not None and text.usage.total_tokens > 0

    tool = await llm.chat.completions.create(model="gpt-test", messages=said("b"), tools=TOOLS)
    assert tool.choices[0].finish_reason == "tool_calls"
    [call] = tool.choices[0].message.tool_calls or []
    assert call.type == "function" and json.loads(call.function.arguments) == {"city": "Rome"}
    assert [r["completed"] for r in await recorded(http)] == [True, True]


@pytest.mark.parametrize(
    ("reply", "exception", "code"),
    [
        ({"status": 429}, openai.RateLimitError, "rate_limit_exceeded"),
        ({"status": 500}, openai.InternalServerError, None),
        ({"status": 503, "error": {"message": "overloaded"}}, openai.InternalServerError, None),
        (
            {"status": 400, "error": {"message": "too long", "code": "context_length_exceeded"}},
            openai.BadRequestError,
            "context_length_exceeded",
        ),
    ],
)
async def test_each_error_status_surfaces_as_the_sdks_exception(
    llm: AsyncOpenAI,
    http: httpx.AsyncClient,
    reply: Record,
    exception: type[openai.APIStatusError],
    code: str | None,
) -> None:
    await script(http, None, reply)
    with pytest.raises(exception) as raised:
        await stream_chunks(llm, "hello")
    assert raised.value.status_code == reply["status"]
    assert raised.value.code == code
    body = raised.value.body
    assert isinstance(body, dict)
    if "error" in reply:
        assert body["message"] == reply["error"]["message"]
    if reply["status"] == 429:
        assert raised.value.response.headers["retry-after"] == "1"
    [record] = await recorded(http)
    assert record["status"] == reply["status"] and record["chunks_sent"] == 0


async def test_the_sdk_waits_retry_after_then_gets_the_next_reply(
    fake: FakeLLM, http: httpx.AsyncClient
) -> None:
    # Three times the SDK's own first backoff (at most 0.5 s): only the header explains it.
    await script(http, None, {"status": 429, "retry_after": 1.5}, {"content": "made it"})
    async with AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="any", max_retries=1) as retrying:
        completion = await retrying.chat.completions.create(model="gpt-test", messages=said("a"))
    assert completion.choices[0].message.content == "made it"
    limited, answered = await recorded(http)
    assert answered["received_at"] - limited["received_at"] >= 1.5


async def test_hang_makes_the_sdk_time_out_and_the_fake_sees_it_leave(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    await script(http, None, {"hang": 60})
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await stream_chunks(llm.with_options(timeout=0.5), "anyone there?")
    assert time.monotonic() - started < 5

    async def left() -> Record | None:
        [record] = await recorded(http)
        return record if record["disconnected"] else None

    record = await until(left)
    assert record["status"] is None and record["chunks_sent"] == 0 and not record["completed"]
    assert record["disconnected_at"] - record["received_at"] >= 0.5


async def test_fail_after_drops_the_connection_mid_stream(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    await script(
        http,
        None,
        {"content": "one two three four five", "fail_after": 2},
        {"content": "never whole", "fail_after": 0},
    )
    received: list[str] = []
    stream = await llm.chat.completions.create(model="gpt-test", messages=said("a"), stream=True)
    with pytest.raises(httpx.RemoteProtocolError):
        async for chunk in stream:
            received += contents([chunk])
    assert received == ["one ", "two "]

    with pytest.raises(openai.APIConnectionError):  # not streamed: cut after the headers
        await llm.chat.completions.create(model="gpt-test", messages=said("b"))

    streamed, whole = await recorded(http)
    assert streamed["chunks_sent"] == 2
    assert not streamed["completed"] and not streamed["disconnected"]  # the fake cut it
    assert whole["status"] == 200 and not whole["completed"]


async def test_a_client_that_leaves_mid_stream_is_recorded_as_disconnected(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    await script(http, None, {"content": words, "delay": 0.02}, {"content": words, "delay": 0.02})

    # One breaks out of the iteration and closes the response...
    stream = await llm.chat.completions.create(model="gpt-test", messages=said("a"), stream=True)
    async for _ in stream:
        break
    await stream.close()
    closed_at = time.time()

    # ... the other is a task that is cancelled.
    first_chunk = asyncio.Event()

    async def read() -> None:
        stream = await llm.chat.completions.create(
            model="gpt-test", messages=said("b"), stream=True
        )
        async with stream:
            async for _ in stream:
                first_chunk.set()

    reader = asyncio.create_task(read())
    await wait_for_event(first_chunk, reader)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    async def both_over() -> list[Record] | None:
        records = await recorded(http)
        return records if all(r["finished_at"] for r in records) else None

    closed, cancelled = await until(both_over)  # each within 5 s: 100 words take 2
    for record in (closed, cancelled):
        assert record["disconnected"] and not record["completed"]
        assert 1 <= record["chunks_sent"] < 100
        assert record["received_at"] < record["disconnected_at"] <= record["finished_at"]
    assert closed["disconnected_at"] <= closed_at + 1.0


async def test_parallel_conversations_get_their_own_replies(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    marks = [marker() for _ in range(8)]
    for mark in marks:
        await script(http, mark, {"content": f"reply for {mark}", "delay": 0.05})
    await script(http, None, {"content": "from the fallback"})

    async def ask(text: str) -> str:
        return "".join(contents(await stream_chunks(llm, text)))

    answers = await asyncio.gather(*(ask(f"{mark}: hello") for mark in reversed(marks)))
    assert answers == [f"reply for {mark}" for mark in reversed(marks)]
    together = await recorded(http)
    assert max(r["received_at"] for r in together) < min(r["finished_at"] for r in together)
    assert await ask("no marker here") == "from the fallback"
    assert (await ask("nothing scripted left")).startswith('You said: "nothing scripted left"')
    assert (await http.get("/fake/script")).json() == {"scripts": []}


async def test_a_script_follows_its_conversation_through_later_turns(
    llm: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    mark = marker()
    await script(http, mark, {"content": "first"}, {"content": "second"}, {"content": "third"})
    turn1 = said(f"{mark} start")
    first = await llm.chat.completions.create(model="gpt-test", messages=turn1)
    turn2: list[Any] = [
        *turn1,
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "and then?"},  # no marker: it is in the history
    ]
    second = await llm.chat.completions.create(model="gpt-test", messages=turn2)
    assert first.choices[0].message.content == "first"
    assert second.choices[0].message.content == "second"
    [left] = (await http.get("/fake/script")).json()["scripts"]
    assert (left["match"], left["used"], left["replies"]) == (mark, 2, [{"content": "third"}])

    assert (await http.delete("/fake/script")).json() == {"cleared": 1}
    assert (await http.delete("/fake/requests")).json() == {"cleared": 2}
    assert await recorded(http) == []


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "robot", "content": "hi"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0]"),
        ([{"role": "tool", "tool_call_id": "call_x", "content": "42"}], "messages[0].tool_call_id"),
        (
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "user", "content": "well?"},
            ],
            "messages[2]",
        ),
    ],
)
async def test_a_malformed_request_is_a_400_naming_the_parameter(
    llm: AsyncOpenAI, http: httpx.AsyncClient, messages: list[Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await llm.chat.completions.create(model="gpt-test", messages=messages)
    assert raised.value.param == param
    assert raised.value.type == "invalid_request_error"
    [record] = await recorded(http)
    body = raised.value.body
    assert isinstance(body, dict)
    assert record["status"] == 400 and record["error"] == body["message"]


async def test_bad_json_and_bad_scripts_get_clear_errors(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("We could not parse the JSON body")

    streamless = {"model": "m", "messages": said("x"), "stream_options": {"include_usage": True}}
    response = await http.post("/v1/chat/completions", json=streamless)
    assert response.json()["error"]["param"] == "stream_options"

    bad_scripts = [
        ({"replies": [{"content": "x", "chunk": 0}]}, "replies[0].chunk"),
        ({"replies": [{"status": 429, "content": "x"}]}, "replies[0]"),
        ({"replies": [{"contnet": "typo"}]}, "replies[0].contnet"),
        ({"match": "m", "replies": []}, "replies"),
    ]
    for body, param in bad_scripts:
        response = await http.post("/fake/script", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param, response.json()
    assert (await http.get("/fake/script")).json() == {"scripts": []}  # nothing half-added


async def test_models_and_health(llm: AsyncOpenAI, http: httpx.AsyncClient) -> None:
    models = [model.id async for model in llm.models.list()]
    assert models == ["fleet-fake"]
    assert (await http.get("/fake/health")).json() == {"status": "ok", "pace": PACE}


async def test_the_cli_serves_the_default_reply_at_its_pace_until_sigterm() -> None:
    port, pace = free_port(), 25.0
    env = {**os.environ, "FLEET_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
    args = ["fake-llm", "--port", str(port), "--pace", str(pace)]
    process = await FleetProcess("fake-llm", args, env).start()
    try:
        started = await process.wait_for("fake_llm_started")
        assert started["url"] == f"http://127.0.0.1:{port}" and started["pace"] == pace
        base_url = f"http://127.0.0.1:{port}/v1"
        async with AsyncOpenAI(base_url=base_url, api_key="any", max_retries=0) as llm:
            asked = time.monotonic()
            stream = await llm.chat.completions.create(
                model="gpt-test", messages=said("tell me something"), stream=True
            )
            arrivals = [
                (time.monotonic(), text) async for chunk in stream for text in contents([chunk])
            ]
    finally:
        code = await process.stop()
    assert code == 0

    text = "".join(piece for _, piece in arrivals)
    assert text.startswith('You said: "tell me something".')
    assert all(len(piece.split()) == 1 for _, piece in arrivals)  # a word at a time
    words = len(arrivals)
    took = arrivals[-1][0] - asked
    assert (words - 1) / pace <= took < 3 * words / pace
    assert arrivals[0][0] - asked < took / 2  # streamed, not sent in one go
    [line] = process.events("chat_completion")
    assert (line["chunks"], line["completed"], line["disconnected"]) == (words + 1, True, False)
    assert process.events("fake_llm_stopped")
