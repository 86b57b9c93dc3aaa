"""``examples/js/talk.mjs``, run with node as its header says, against a fleet of real
processes with two gateways; the one it talks to is killed mid-turn: it goes on
through the other, printing every event once and the streamed answer whole."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from broker.settings import Settings
from fleet.harness import LocalFleet
from tests.nodejs import node_with_modules
from tests.support import create_conversation, http, token

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "js"
LONG = " ".join(f"w{i}" for i in range(60))  # 3 s at 50 ms a word
STREAMED = "  ... "


async def test_the_js_example_talks_and_moves_to_the_other_gateway(settings: Settings) -> None:
    node = await asyncio.to_thread(node_with_modules, EXAMPLE)
    async with LocalFleet(settings, FLEET_ECHO_DELAY="0.05") as fleet:
        first, first_url = await fleet.gateway()
        _, second_url = await fleet.gateway()
        await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(first_url, bearer, initial="hello")
        async with http(first_url, bearer) as api:  # answered: the example replays it
            async with asyncio.timeout(10):
                while len(await logged(api, cid)) < 4:
                    await asyncio.sleep(0.05)
        talk = await asyncio.create_subprocess_exec(
            node,
            "talk.mjs",
            f"{first_url},{second_url}",
            bearer,
            cid,
            LONG,
            cwd=EXAMPLE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert talk.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(60):
                async for raw in talk.stdout:
                    lines.append(raw.decode().removesuffix("\n"))
                    if sum(line.startswith(STREAMED) for line in lines) == 5:
                        await first.kill()
                code = await talk.wait()
        finally:
            if talk.returncode is None:
                talk.kill()
        stderr = (await talk.stderr.read()).decode() if talk.stderr else ""

    assert code == 0, "\n".join(lines) + stderr
    assert [line for line in lines if line.startswith("connected to")] == [
        f"connected to {first_url}",
        f"connected to {second_url}",
    ]
    acks = [json.loads(line.removeprefix("ack ")) for line in lines if line.startswith("ack ")]
    assert len(acks) == 1 and acks[0]["ok"]
    printed = [line.split(" ", 3) for line in lines if line.startswith("#")]
    assert [int(e[0][1:]) for e in printed] == list(range(len(printed)))  # each once, in order
    *_, (_, source, kind, data) = printed
    assert (source, kind, json.loads(data)["content"]) == ("agent", "message", LONG)
    assert json.loads(data)["in_reply_to"] == acks[0]["action_id"]
    text = "".join(line.removeprefix(STREAMED) for line in lines if line.startswith(STREAMED))
    assert text == LONG  # streamed across both gateways, nothing repeated or missing


async def logged(api: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await api.get(f"/api/conversations/{cid}/events")).json()[
        "events"
    ]
    return events
