"""The README's example agent, as printed, run by a real worker: its step is logged,
its answer streamed, then logged in reply to the turn."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, token

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
