"""What a turn sends the gateways, message by message: a quick turn's start goes out
with its answer (one broker message), a slow turn's start goes out on its own."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from broker.amqp import Broker
from broker.settings import Settings
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, replied_to, token

Kinds = list[tuple[str, str]]


async def turn_batches(fleet: InProcessFleet, settings: Settings) -> list[Kinds]:
    """The live-event messages published for one turn, as (source, kind) of each event."""
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    batches: list[Kinds] = []
    listener = Broker(settings.amqp_url, settings.names, name="listener")
    await listener.connect()
    try:
        await listener.listen_events(
            lambda body: batches.append([(e["source"], e["kind"]) for e in orjson.loads(body)])
        )
        await listener.bind_events(cid)
        client = await Client().connect(fleet.url, bearer, cid)
        ack = await client.act("hello")
        await client.wait_for(replied_to(ack["action_id"]))
        await client.close()
        async with asyncio.timeout(10):  # the client's gateway had it: ours has it soon
            while not any(("agent", "message") in batch for batch in batches):
                await asyncio.sleep(0.01)
    finally:
        await listener.close()
    return batches


async def test_a_quick_turn_goes_out_as_one_message(
    fleet: InProcessFleet, settings: Settings
) -> None:
    assert await turn_batches(fleet, settings) == [
        [("user", "message"), ("agent", "state"), ("agent", "message"), ("agent", "state")]
    ]


async def test_a_slow_turn_is_seen_running_before_it_answers(
    fleet: InProcessFleet, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURN_SECONDS", "0.5")  # and says nothing meanwhile
    fleet.settings = settings.model_copy(update={"agent": "tests.agents:EpochEcho"})
    assert await turn_batches(fleet, settings) == [
        [("user", "message"), ("agent", "state")],
        [("agent", "message"), ("agent", "state")],
    ]
