"""A websocket client's frames leave the gateway through the coalescing transport
(one write per loop turn), and still arrive whole and in order."""

from __future__ import annotations

from broker.coalesce import CoalescedTransport
from broker.settings import Settings
from gateway.protocol import CoalescedWebSocket
from tests.conftest import InProcessFleet
from tests.support import Client, answers, create_conversation, replied_to, token


async def test_websocket_frames_are_coalesced_and_arrive_in_order(
    fleet: InProcessFleet, settings: Settings
) -> None:
    gateway = await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    try:
        sockets = [
            c for c in gateway.server.server_state.connections if isinstance(c, CoalescedWebSocket)
        ]
        assert len(sockets) == 1
        assert isinstance(sockets[0].transport, CoalescedTransport)
        acks = [await client.act(f"m{i}") for i in range(20)]
        assert all(ack["ok"] for ack in acks), acks
        events = await client.wait_for(replied_to(acks[-1]["action_id"]))
        assert answers(events) == [f"m{i}" for i in range(20)]
        assert [e["id"] for e in events] == list(range(len(events)))
    finally:
        await client.close()
