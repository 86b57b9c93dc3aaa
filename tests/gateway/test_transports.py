"""Every transport delivers every event: long-polling clients get replays and bursts of
hundreds of events (python-engineio refuses a poll response of more than 16
packets), websocket clients too, directly and through ``deploy/nginx.conf``."""

from __future__ import annotations

import asyncio

import pytest

from broker.settings import Settings
from tests.chaos.servers import Proxy
from tests.conftest import InProcessFleet
from tests.support import Client, create_conversation, token

BURST = 300
LOGGED = BURST + 4  # the message, running, the burst, the turn's answer, awaiting
TRANSPORTS = [("polling",), ("websocket",), ("polling", "websocket")]


async def burst_then_replay(url: str, bearer: str, cid: str, transports: tuple[str, ...]) -> None:
    """A live burst of ``BURST`` events, then the whole log replayed to a new client."""
    live = await Client().connect(url, bearer, cid, transports=transports)
    ack = await live.act(f"burst {BURST}", action_id="b")
    assert ack["ok"], ack
    events = await live.wait_for(lambda ev: len(ev) >= LOGGED, timeout=30)
    assert [e["id"] for e in events] == list(range(LOGGED))
    assert live.sio.connected
    async with asyncio.timeout(5):  # a long-poll is not held until the ping timeout
        await live.close()

    replayed = await Client().connect(url, bearer, cid, transports=transports)
    events = await replayed.wait_for(lambda ev: len(ev) >= LOGGED, timeout=30)
    assert [e["id"] for e in events] == list(range(LOGGED))
    async with asyncio.timeout(5):
        await replayed.close()


@pytest.mark.parametrize("transports", TRANSPORTS, ids="+".join)
async def test_bursts_and_replays_reach_every_transport(
    fleet: InProcessFleet, settings: Settings, transports: tuple[str, ...]
) -> None:
    fleet.settings = settings.model_copy(update={"agent": "tests.agents:Burst"})
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    # A slow network (as through a load balancer): many events are ready before the
    # next long-poll arrives.
    proxy = Proxy(settings.port, delay=0.02)
    url = f"http://127.0.0.1:{await proxy.start()}"
    try:
        await burst_then_replay(url, bearer, cid, transports)
    finally:
        await proxy.close()
