"""Hostile clients: reserved event names, malformed frames, odd arguments, huge or slow
requests. Each gets a clear refusal (or a closed connection) and changes nothing else."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import socketio
import websockets
from redis.asyncio import Redis
from socketio import packet

from broker.names import Names
from broker.settings import Settings
from fleet.harness import free_port
from tests.conftest import InProcessFleet
from tests.gateway.test_bad_input import refused
from tests.support import Client, create_conversation, http, replied_to, token


async def test_events_named_connect_or_disconnect_are_ignored(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    await fleet.start_gateway()
    await fleet.start_worker()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    clients_before = await redis.hgetall(names.clients(cid))

    sio = client.sio
    for event in ("connect", "disconnect"):
        forged = {"token": bearer, "conversation_id": cid, "latest_event_id": -1}
        await sio._send_packet(sio.packet_class(packet.EVENT, namespace="/", data=[event, forged]))
    ack = await client.act("still here?")

    await client.wait_for(replied_to(ack["action_id"]))
    assert sio.connected
    assert await redis.hgetall(names.clients(cid)) == clients_before  # no extra presence
    ids = [e["id"] for e in client.events]
    assert ids == list(range(len(ids)))  # no replay sent a second time
    await client.close()


async def test_a_malformed_frame_closes_its_connection_and_is_said_once(
    fleet: InProcessFleet, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await fleet.start_gateway()
    url = f"ws://127.0.0.1:{settings.port}/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws:
        await ws.recv()  # the Engine.IO open packet
        for frame in ["4\x00garbage{{{", '42["user_action"', "4x", "40{bad json"] * 25:
            await ws.send(frame)
        async with asyncio.timeout(10):
            # Until Engine.IO's close packet ("1") or the socket's end.
            with contextlib.suppress(websockets.ConnectionClosed):
                while await ws.recv() != "1":
                    pass
    output = capsys.readouterr().out
    assert output.count("packet_malformed") == 1
    assert "Traceback" not in output
    # The gateway goes on serving others.
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    await (await Client().connect(fleet.url, bearer, cid)).close()


@pytest.mark.parametrize("latest", ["--5", "²", "1e3", 2**63, "9" * 30, True, 2.5])
async def test_odd_latest_event_ids_are_refused_clearly(
    fleet: InProcessFleet, settings: Settings, latest: object
) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    auth = {"token": bearer, "conversation_id": cid, "latest_event_id": latest}
    error = await refused(fleet.url, auth)
    assert error["code"] == "bad_request"
    assert "latest_event_id" in error["message"]


async def test_odd_user_actions_get_a_clear_ack(fleet: InProcessFleet, settings: Settings) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    client = await Client().connect(fleet.url, bearer, cid)
    action = {"kind": "message", "data": {"content": "fine"}}
    surrogate = {"kind": "message", "data": {"content": "half \ud800 a pair"}}

    extra: Any = await client.sio.call("user_action", (action, "and", "more"), timeout=10)
    lone: Any = await client.sio.call("user_action", surrogate, timeout=10)

    assert extra == {
        "ok": False,
        "error": {"code": "bad_request", "message": "user_action takes one argument, the action"},
    }
    assert lone["error"]["code"] == "bad_request"
    assert "Unicode" in lone["error"]["message"]
    assert (await client.act("and then a good one"))["ok"]
    await client.close()


async def test_an_oversized_body_is_refused_before_it_is_read(
    fleet: InProcessFleet, settings: Settings
) -> None:
    await fleet.start_gateway()
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 50 * 2**20:
            sent += 2**16
            yield b"x" * 2**16

    # A Content-Length over the limit: refused before any of the body is read.
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
    writer.write(
        f"POST /api/conversations/{cid}/actions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {bearer}\r\nContent-Length: {50 * 2**20}\r\n\r\n".encode()
    )
    await writer.drain()
    async with asyncio.timeout(5):
        status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 413 ")

    # No Content-Length (chunked): read no further than the limit.
    async with http(fleet.url, bearer) as client:
        try:
            chunked = await client.post(f"/api/conversations/{cid}/actions", content=endless())
        except httpx.TransportError:
            chunked = None  # the gateway may close the connection while we still send
    if chunked is not None:
        assert (chunked.status_code, chunked.json()["error"]["code"]) == (413, "payload_too_large")
    assert sent < 50 * 2**20  # the gateway stopped reading long before the end


async def test_partial_headers_are_not_held(fleet: InProcessFleet, settings: Settings) -> None:
    fleet.settings = settings.model_copy(update={"header_timeout": 0.5})
    await fleet.start_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the gateway
    writer.close()


async def test_tokens_must_expire(fleet: InProcessFleet, settings: Settings) -> None:
    import jwt

    await fleet.start_gateway()
    forever = jwt.encode({"sub": "alice"}, settings.require_jwt_secret(), "HS256")
    async with http(fleet.url, forever) as client:
        response = await client.get("/api/conversations")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "token has no 'exp' claim"
    sio = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(fleet.url, auth={"token": forever, "conversation_id": "x"})


async def test_a_users_connections_are_limited_across_gateways(
    fleet: InProcessFleet, settings: Settings, redis: Redis, names: Names
) -> None:
    fleet.settings = settings.model_copy(update={"max_connections_per_user": 2})
    second = free_port()
    await fleet.start_gateway()
    await fleet.start_gateway(second)
    bearer = token(settings, "alice")
    cid = await create_conversation(fleet.url, bearer)
    first = await Client().connect(fleet.url, bearer, cid)
    other = await Client().connect(f"http://127.0.0.1:{second}", bearer, cid)

    error = await refused(fleet.url, {"token": bearer, "conversation_id": cid})

    assert error["code"] == "too_many_connections"
    await other.close()
    async with asyncio.timeout(5):  # the gateway counts the departure
        while len(await redis.hgetall(names.connections("alice"))) > 1:
            await asyncio.sleep(0.02)
    again = await Client().connect(fleet.url, bearer, cid)  # a slot freed
    await again.close()
    await first.close()
