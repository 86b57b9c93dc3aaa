"""A websocket client's frames leave the gateway through the coalescing transport
(one write per loop turn), and still arrive whole and in order; the events of one
logged batch leave in one write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from broker.coalesce import CoalescedTransport
from broker.settings import Settings
from gateway.protocol import CoalescedWebSocket
from tests.conftest import InProcessFleet
from tests.support import Client, answers, create_conversation, replied_to, token


class Recorder:
    """A transport's stand-in that keeps what is written to it, then writes it."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@asynccontextmanager
async def one_client(
    fleet: InProcessFleet, settings: Settings
) -> AsyncIterator[tuple[CoalescedTransport, Client]]:
    """A gateway and a worker; a client of a new conversation, and the coalescing
    transport of its websocket in the gateway."""
    gateway = await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    try:
        connections = gateway.server.server_state.connections
        [socket] = [c for c in connections if isinstance(c, CoalescedWebSocket)]
        assert isinstance(socket.transport, CoalescedTransport)
        yield socket.transport, client
    finally:
        await client.close()


async def test_websocket_frames_are_coalesced_and_arrive_in_order(
    fleet: InProcessFleet, settings: Settings
) -> None:
    async with one_client(fleet, settings) as (_, client):
        acks = [await client.act(f"m{i}") for i in range(20)]
        assert all(ack["ok"] for ack in acks), acks
        events = await client.wait_for(replied_to(acks[-1]["action_id"]))
        assert answers(events) == [f"m{i}" for i in range(20)]
        assert [e["id"] for e in events] == list(range(len(events)))


async def test_the_events_of_one_batch_leave_in_one_write(
    fleet: InProcessFleet, settings: Settings
) -> None:
    """The user's message and the turn's running state are logged together, so they
    reach the gateway as one batch; its events are emitted without a turn of the loop
    between them (python-socketio's ``emit`` took one each: a write per event)."""
    async with one_client(fleet, settings) as (coalesced, client):
        recorder = Recorder(coalesced._transport)
        coalesced._transport = cast(asyncio.Transport, recorder)
        await client.act("together", action_id="batched")
        await client.wait_for(replied_to("batched"))
        [write] = [w for w in recorder.writes if b'"source":"user"' in w]
        assert b'"state":"running"' in write, recorder.writes
