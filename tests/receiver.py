"""A real HTTP server receiving webhooks in tests: it records every request, answers
with the status it is told, and can go down (its port refuses connections, open ones
are cut) and come back up on the same port. Plus the checks that every logged state
change reached it, signed and in order."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from broker.names import Names
from fleet.harness import free_port

SECRET = "webhook-test-secret-" + "s" * 24  # the fleets' FLEET_WEBHOOK_SECRET in tests


@dataclass(frozen=True)
class Received:
    """One request, as it arrived, and the status it was answered with."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int
    at: float  # monotonic

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    def signed_with(self, secret: str) -> bool:
        """The receiver's check, as the README shows it."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-fleet-signature", ""))


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length bodies)."""

    def __init__(self, status: int = 200) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.status = status  # what the next requests are answered
        self.requests: list[Received] = []
        self._server: asyncio.Server | None = None
        self.up = False
        self._open: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Condition()

    @property
    def delivered(self) -> list[Received]:
        """The requests answered with 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.up = True
        return self

    async def stop(self) -> None:
        """Down: stop listening and cut every open connection, answering nothing more."""
        self.up = False
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(
        self, done: Callable[[list[Received]], bool], timeout: float = 10
    ) -> list[Received]:
        """Wait until ``done(delivered)`` holds; fail with what arrived if it never does."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: done(self.delivered)), timeout
                )
            except TimeoutError:
                got = [r.json() for r in self.delivered]
                raise AssertionError(f"not received in {timeout}s; got {got}") from None
        return self.delivered

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while request := await reader.readline():
                path = request.decode().split(" ")[1]
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not self.up:  # read before it went down: never answered
                    return
                status = self.status
                async with self._changed:
                    self.requests.append(Received(path, headers, body, status, time.monotonic()))
                    self._changed.notify_all()
                writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()


Receivers = Callable[..., Awaitable[Receiver]]  # the ``receivers`` fixture


async def logged_states(redis: Redis, names: Names, cid: str) -> list[bytes]:
    """The conversation's state events, as logged (byte for byte)."""
    logged = cast(list[bytes], await redis.lrange(names.log(cid), 0, -1))
    return [raw for raw in logged if orjson.loads(raw)["kind"] == "state"]


def event_ids(received: list[Received], cid: str) -> list[int]:
    """The ids of the events delivered about ``cid``, in arrival order."""
    return [r.json()["event"]["id"] for r in received if r.json()["conversation_id"] == cid]


async def everything_delivered(
    receiver: Receiver, redis: Redis, names: Names, cids: list[str], timeout: float
) -> None:
    """Every state change of each conversation reached ``receiver``, signed, in log
    order (a copy may come again right after itself, never after a later one)."""
    expected = {
        cid: [orjson.loads(raw)["id"] for raw in await logged_states(redis, names, cid)]
        for cid in cids
    }
    await receiver.wait_for(
        lambda got: all(set(event_ids(got, c)) >= set(ids) for c, ids in expected.items()),
        timeout=timeout,
    )
    for cid, ids in expected.items():
        got = event_ids(receiver.delivered, cid)
        assert got == sorted(got), f"{cid}: delivered out of order: {got}"
        assert set(got) == set(ids), f"{cid}: delivered {got}, logged {ids}"
        assert len(got) > 0
    assert all(r.signed_with(SECRET) for r in receiver.requests)
