"""The LLM agent's turns across real processes and a real (fake) LLM server: a turn of
three steps survives SIGKILL and SIGTERM of its owner mid-step (resumed from its last
logged step, never asked twice), a stop cancels the LLM request in flight, and an LLM
failure ends the turn with a clear error while the conversation goes on."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from broker.names import Names
from broker.settings import Settings
from fleet.fake_llm.server import FakeLLM
from fleet.harness import LocalFleet, free_port
from tests.llm import requests_for, script, serving
from tests.support import Client, EventList, create_conversation, replied_to, token

ANSWER = " ".join(f"word{i}" for i in range(30))


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with serving() as server:
        yield server


def llm_env(fake: FakeLLM) -> dict[str, str]:
    return {
        "FLEET_AGENT": "workers.agents.llm:LLMAgent",
        "FLEET_LLM_BASE_URL": f"{fake.url}/v1",
        "FLEET_LLM_MODEL": "fleet-fake",
        "FLEET_LLM_RETRIES": "0",
        "FLEET_TOOLS": "workers.agents.tools:BUILTIN",
    }


def steps_of(events: EventList, turn_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["source"] == "agent"
        and e["data"].get("turn_id") == turn_id
        and e["kind"] in ("message", "tool_result")
    ]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_a_three_step_turn_resumes_from_its_last_logged_step(
    settings: Settings, fake_llm: FakeLLM, sig: signal.Signals
) -> None:
    mark = f"m-{secrets.token_hex(4)}"
    await script(
        fake_llm,
        mark,
        {"tool_calls": [{"name": "calculate", "arguments": {"expression": "6*7"}}]},
        {"content": ANSWER, "chunk": "word", "delay": 0.1},  # cut short by the signal
        {"content": ANSWER, "chunk": "word", "delay": 0.01},  # the step asked again
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, **llm_env(fake_llm)) as fleet:
        await fleet.gateway(port)
        await fleet.reaper()
        owner, _ = await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        await fleet.worker()

        ack = await client.act(f"{mark} what is 6*7?", action_id="t")
        await client.wait_for(lambda _: sum(f["step"] == 2 for f in client.frames) >= 3)
        owner.signal(sig)
        events = await client.wait_for(replied_to("t"), timeout=30)

    assert ack["ok"]
    steps = steps_of(events, "t")
    assert [(s["kind"], s["data"]["step"]) for s in steps] == [
        ("message", 0),
        ("tool_result", 1),
        ("message", 2),
    ]  # each step logged once; the last is the answer
    assert steps[1]["data"]["content"] == "42"
    assert steps[2]["data"]["content"] == ANSWER and steps[2]["data"]["in_reply_to"] == "t"
    first, cut, again = await requests_for(fake_llm, mark)  # the LLM was asked 3 times
    assert cut["disconnected"] and not cut["completed"]
    assert again["body"]["messages"] == cut["body"]["messages"]  # only the unfinished step
    assert len(first["body"]["messages"]) == len(cut["body"]["messages"]) - 2
    epochs = sorted({f["epoch"] for f in client.frames if f["step"] == 2})
    assert len(epochs) == 2  # the new owner's frames replaced the old ones
    assert client.text.shown == {("t", 2): ANSWER}
    assert client.text.faults == []
    await client.close()


async def test_a_stop_cancels_the_llm_request_in_flight(
    settings: Settings, fake_llm: FakeLLM
) -> None:
    mark = f"m-{secrets.token_hex(4)}"
    await script(fake_llm, mark, {"content": ANSWER, "chunk": "word", "delay": 0.1})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, **llm_env(fake_llm)) as fleet:
        await fleet.gateway(port)
        await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        await client.act(f"{mark} talk to me", action_id="long")
        await client.wait_for(lambda _: len(client.frames) >= 2)

        assert (await client.stop())["ok"]
        events = await client.wait_for(
            lambda ev: any(e["kind"] == "turn_aborted" for e in ev), timeout=10
        )
        async with asyncio.timeout(10):
            while not (await requests_for(fake_llm, mark))[0]["disconnected"]:
                await asyncio.sleep(0.05)
        await client.close()

    aborted = next(e for e in events if e["kind"] == "turn_aborted")
    assert aborted["data"] == {"turn_id": "long", "reason": "stopped"}
    [request] = await requests_for(fake_llm, mark)
    assert request["disconnected"] and not request["completed"]


async def test_an_llm_failure_ends_the_turn_and_the_conversation_goes_on(
    settings: Settings, fake_llm: FakeLLM, redis: Redis, names: Names
) -> None:
    mark = f"m-{secrets.token_hex(4)}"
    await script(
        fake_llm,
        mark,
        {"status": 503, "error": {"message": "overloaded", "type": "server_error"}},
        {"content": "better now"},
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with LocalFleet(settings, **llm_env(fake_llm)) as fleet:
        await fleet.gateway(port)
        await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        client = await Client().connect(url, bearer, cid)
        await client.act(f"{mark} hello", action_id="a")
        events = await client.wait_for(lambda ev: any(e["kind"] == "error" for e in ev), timeout=15)
        await client.act(f"{mark} again", action_id="b")
        events = await client.wait_for(replied_to("b"), timeout=15)
        await client.close()

    error = next(e for e in events if e["kind"] == "error")
    assert error["source"] == "agent"
    assert (error["data"]["turn_id"], error["data"]["code"]) == ("a", "llm_unavailable")
    assert events[error["id"] + 1]["data"] == {"state": "awaiting_user_input"}
    assert (await redis.hget(names.meta(cid), "turn_from")) is None  # nothing left running
