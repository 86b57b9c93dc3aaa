"""What a turn sends the gateways, message by message: a quick turn's start goes out
with its answer (one broker message), a slow turn's start goes out on its own, and a
conversation that stops does not wait for a broker that is away to send it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
import pytest

from broker.amqp import Broker
from broker.events import NewEvent
from broker.settings import Settings
from broker.store import Appended, Store
from broker.timers import Timers
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, replied_to, token
from workers.scribe import Scribe

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


class Logging:
    """A store that logs whatever it is given, from id 0."""

    async def append(self, cid: str, lease: str, bodies: list[bytes], *args: Any) -> Appended:
        return Appended(first_id=0, entries=[], duplicate=False)


class AwayBroker:
    """A broker that takes no event: it is away."""

    def __init__(self) -> None:
        self.tries = 0

    async def publish_events(self, cid: str, entries: list[bytes]) -> None:
        self.tries += 1
        raise ConnectionError("the broker is away")


async def test_a_stopping_conversation_does_not_wait_for_an_away_broker() -> None:
    broker = AwayBroker()
    scribe = Scribe(
        "c-1", "w:1", cast(Store, Logging()), cast(Timers, None), cast(Broker, broker), lambda: True
    )
    await scribe.log(NewEvent("agent", "state", {"state": "running"}))  # held, then retried
    async with asyncio.timeout(5):
        while broker.tries < 2:
            await asyncio.sleep(0.01)
    async with asyncio.timeout(5):  # the loop stops: the retries give up
        await scribe.flush()
    await scribe.log(NewEvent("agent", "state", {"state": "running"}))
    tries = broker.tries
    async with asyncio.timeout(5):  # what is held when it stops is tried once
        await scribe.flush()
    assert broker.tries == tries + 1
