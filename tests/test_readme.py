"""The README's examples, as printed, against real fleets: the example agent (its step
logged, its answer streamed, then logged in reply to the turn), and the webhook
receiver (forged deliveries refused, signed ones printed)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path

import httpx
from pydantic import SecretStr

from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, replied_to, token

README = Path(__file__).resolve().parent.parent / "README.md"

# What the example leaves to its reader: the slow lookup and the streamed writing.
HELPERS = """
import asyncio

async def lookup(question):
    return f"notes on {question}"

async def write_answer(question, found):
    for word in ["Here", " are", " the", " ", found]:
        await asyncio.sleep(0.06)
        yield word
"""


def example_agent() -> str:
    """The first Python block of the README's "Writing an agent" section."""
    section = README.read_text().split("## Writing an agent", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "the README lost its example agent"
    return found.group(1)


async def test_the_readme_agent_runs(
    fleet: InProcessFleet, settings: Settings, tmp_path: Path
) -> None:
    module = tmp_path / "readme_agent.py"
    module.write_text(example_agent() + HELPERS)
    sys.path.insert(0, str(tmp_path))
    try:
        fleet.settings = settings.model_copy(update={"agent": "readme_agent:LookupAgent"})
        await fleet.start_gateway()
        await fleet.start_worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(fleet.url, bearer)
        client = await Client().connect(fleet.url, bearer, cid)

        await client.act("tides", action_id="t-1")
        events = await client.wait_for(
            lambda ev: any(e["data"].get("in_reply_to") == "t-1" for e in ev)
        )
        await client.close()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("readme_agent", None)

    step = next(e for e in events if e["kind"] == "tool_result")
    assert step["data"] == {"content": "notes on tides", "turn_id": "t-1", "step": 0}
    answer = next(e for e in events if e["data"].get("in_reply_to") == "t-1")
    assert answer["data"]["content"] == "Here are the notes on tides"
    assert answer["data"]["step"] == 1
    assert client.text.shown == {("t-1", 1): "Here are the notes on tides"}
    assert len(client.frames) > 1  # streamed, not only logged


def webhook_receiver() -> str:
    """The Python block of the README's *Webhooks* paragraph: the receiver."""
    section = README.read_text().split("**Webhooks.** On every agent state change", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "the README lost its webhook receiver"
    return found.group(1)


async def test_the_readme_webhook_receiver_checks_signatures(
    fleet: InProcessFleet, settings: Settings
) -> None:
    port = free_port()
    code = webhook_receiver()
    assert '("127.0.0.1", 9000)' in code
    secret = "readme-secret-" + "r" * 32
    receiver = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code.replace("9000", str(port)),
        env={**os.environ, "FLEET_WEBHOOK_SECRET": secret},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/hook"
        async with httpx.AsyncClient() as poster:
            async with asyncio.timeout(10):
                while True:  # until it listens
                    with contextlib.suppress(httpx.ConnectError):
                        forged = await poster.post(
                            url,
                            content=b"{}",
                            headers={
                                "X-Fleet-Signature": "sha256=" + "0" * 64,
                                "Content-Length": "2",
                            },
                        )
                        break
                    await asyncio.sleep(0.05)
        assert forged.status_code == 401

        fleet.settings = settings.model_copy(
            update={"webhook_secret": SecretStr(secret), "webhook_url": url}
        )
        await fleet.start_gateway()
        await fleet.start_worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(fleet.url, bearer)
        client = await Client().connect(fleet.url, bearer, cid)
        await client.act("hello", action_id="t-1")
        await client.wait_for(replied_to("t-1"))
        await client.close()

        assert receiver.stdout is not None
        async with asyncio.timeout(10):
            printed = [(await receiver.stdout.readline()).decode().split() for _ in range(2)]
        assert printed == [[cid, "1", "running"], [cid, "3", "awaiting_user_input"]]
    finally:
        receiver.kill()
        await receiver.wait()
