"""Clients that never read cost a gateway bounded memory: a long replay is sent a page
at a time, and no more than a window of packets waits for each client; a client that
reads nothing for FLEET_SLOW_CLIENT_TIMEOUT is disconnected (too_slow)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from contextlib import AsyncExitStack

import orjson

from broker.settings import Settings
from fleet.harness import FleetProcess, LocalFleet
from tests.support import Client, create_conversation, replies, token

MB = 2**20
EVENT_BYTES = 10_000


def masked_text_frame(text: str) -> bytes:
    """A websocket text frame as a client must send it (masked)."""
    data, mask = text.encode(), os.urandom(4)
    size = len(data)
    header = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def silent_client(port: int, bearer: str, cid: str, stack: AsyncExitStack) -> None:
    """A websocket client (by hand: client libraries read on their own) that joins the
    conversation from the start and reads nothing more. Its receive buffer is kept
    small (the kernel would grow it to tens of MB), so the gateway's writes block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    stack.callback(writer.close)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: gateway\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    await reader.read(512)  # Engine.IO's open packet
    auth = {"token": bearer, "conversation_id": cid, "latest_event_id": -1}
    writer.write(masked_text_frame("40" + orjson.dumps(auth).decode()))
    await writer.drain()
    writer.transport.pause_reading()  # type: ignore[attr-defined]  # and never read again


async def sample_rss(process: FleetProcess, samples: list[int]) -> None:
    while True:
        samples.append(process.rss())
        await asyncio.sleep(0.1)


def too_slow(gateway: FleetProcess) -> int:
    return len(gateway.events("client_too_slow"))


async def test_silent_clients_cost_the_gateway_bounded_memory(settings: Settings) -> None:
    env = {"FLEET_AGENT": "tests.agents:Flood", "FLEET_SLOW_CLIENT_TIMEOUT": "3"}
    async with LocalFleet(settings, **env) as fleet:
        gateway, url = await fleet.gateway()
        port = int(url.rsplit(":", 1)[1])
        await fleet.worker()
        bearer = token(settings, "alice")
        cid = await create_conversation(url, bearer)
        writer = await Client().connect(url, bearer, cid)
        await writer.act(f"flood 2000 {EVENT_BYTES}", action_id="log")  # a 20 MB log
        await writer.wait_for(lambda ev: len(replies(ev).get("log", [])) == 2000, timeout=60)
        await writer.close()
        before = gateway.rss()
        samples: list[int] = []
        sampling = asyncio.create_task(sample_rss(gateway, samples))

        async with AsyncExitStack() as stack:
            for _ in range(5):  # replays of the whole log to clients that never read
                await silent_client(port, bearer, cid, stack)
            live = await Client().connect(url, bearer, cid)
            for _ in range(10):  # and live events, on top
                await silent_client(port, bearer, cid, stack)
            more = await live.act(f"flood 1000 {EVENT_BYTES}", action_id="more")
            assert more["ok"], more
            await live.wait_for(lambda ev: len(replies(ev).get("more", [])) == 1000, timeout=60)
            await gateway.wait_for("client_too_slow", lambda _: too_slow(gateway) == 15)
            await live.close()
        sampling.cancel()

    grown = (max(samples) - before) / MB
    print(f"\ngateway RSS {before / MB:.0f} MB, at most {max(samples) / MB:.0f} MB")
    # Bounded: five replay pages (200 events of 10 KB, held raw, parsed and encoded)
    # and fifteen windows of 64 packets come to about 45 MB, allocator slack on top.
    # Unbounded, the five replays (100 MB) and ten live backlogs (100 MB) would be held.
    assert grown < 90, f"the gateway grew by {grown:.0f} MB"
