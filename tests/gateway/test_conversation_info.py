"""What GET tells of a conversation beside its status: the agent's last logged state,
and how many clients are connected to it across every gateway."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, http, replied_to, token


async def info(url: str, bearer: str, cid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation as GET and as the list report it."""
    async with http(url, bearer) as api:
        one = (await api.get(f"/api/conversations/{cid}")).json()
        listed = (await api.get("/api/conversations")).json()["conversations"]
    [same] = [c for c in listed if c["conversation_id"] == cid]
    return one, same


async def test_get_reports_the_agent_state_and_the_clients_of_every_gateway(
    fleet: InProcessFleet, settings: Settings
) -> None:
    fleet.settings = settings.model_copy(update={"echo_delay": 0.2})
    await fleet.start_gateway()
    port = free_port()
    other = f"http://127.0.0.1:{port}"
    await fleet.start_gateway(port=port)
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)

    before, _ = await info(fleet.url, bearer, cid)
    first = await Client().connect(fleet.url, bearer, cid)
    second = await Client().connect(other, bearer, cid)
    together, listed = await info(other, bearer, cid)
    await first.act("one two three four five six", action_id="t")
    await first.wait_for(lambda _: len(first.frames) >= 1)
    running, _ = await info(fleet.url, bearer, cid)
    await first.wait_for(replied_to("t"))
    answered, _ = await info(fleet.url, bearer, cid)
    await first.close()
    await second.close()
    async with asyncio.timeout(10):  # each gateway counts a client out once it has left
        while (left := (await info(fleet.url, bearer, cid))[0])["connections"]:
            await asyncio.sleep(0.05)

    assert (before["agent_state"], before["connections"]) == (None, 0)
    assert together["connections"] == 2 and listed["connections"] == 2
    assert running["agent_state"] == "running"
    assert answered["agent_state"] == "awaiting_user_input"
    assert (left["agent_state"], left["connections"]) == ("awaiting_user_input", 0)
