"""A counting pass-through proxy in front of Redis, for one process's round trips.

``INFO commandstats`` counts every client of the server (the reaper, other test runs
on the same Redis), and Redis 7.0 keeps no per-client command counts, so the scale
scenario points one worker at this proxy instead. It parses the RESP requests the
worker sends and counts commands (by name, and ``EVALSHA`` by script) and round
trips: a round trip starts whenever a connection sends after having been answered,
so a pipeline of many commands is one round trip.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from importlib.resources import files

CHUNK = 65536


def script_names() -> dict[str, str]:
    """SHA1 -> name of every script in ``broker/lua`` (what ``EVALSHA`` calls)."""
    names = {}
    for entry in files("broker").joinpath("lua").iterdir():
        if entry.name.endswith(".lua"):
            sha = hashlib.sha1(entry.read_bytes()).hexdigest()
            names[sha] = entry.name.removesuffix(".lua")
    return names


class RequestParser:
    """Incremental parser of a client's RESP request stream: yields each command's name."""

    def __init__(self, scripts: dict[str, str]) -> None:
        self._buffer = bytearray()
        self._scripts = scripts

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        commands: list[str] = []
        while True:
            parsed = self._one()
            if parsed is None:
                return commands
            commands.append(parsed)

    def _one(self) -> str | None:
        buf = self._buffer
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        if buf[:1] != b"*":  # an inline command: one line
            del buf[: end + 2]
            return "INLINE"
        count = int(buf[1:end])
        pos = end + 2
        args: list[bytes] = []
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            length = int(buf[pos + 1 : end])
            start = end + 2
            if len(buf) < start + length + 2:
                return None
            if len(args) < 2:
                args.append(bytes(buf[start : start + length]))
            pos = start + length + 2
        del buf[:pos]
        name = args[0].decode().upper() if args else "?"
        if name == "EVALSHA" and len(args) > 1:
            return f"EVALSHA {self._scripts.get(args[1].decode(), args[1].decode()[:8])}"
        return name


class CountingProxy:
    """Listens on 127.0.0.1:<port> and forwards every connection to Redis, counting."""

    def __init__(self, redis_host: str = "127.0.0.1", redis_port: int = 6379) -> None:
        self.redis_host = redis_host
        self.redis_port = redis_port
        self.commands: Counter[str] = Counter()
        self.round_trips = 0
        self._scripts = script_names()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def reset(self) -> None:
        self.commands.clear()
        self.round_trips = 0

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            redis_r, redis_w = await asyncio.open_connection(self.redis_host, self.redis_port)
            answered = [True]  # per connection: has Redis answered since the client last sent?
            parser = RequestParser(self._scripts)
            try:
                async with asyncio.TaskGroup() as pumps:
                    pumps.create_task(self._requests(client_r, redis_w, parser, answered))
                    pumps.create_task(self._replies(redis_r, client_w, answered))
            finally:
                redis_w.close()
        except* (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: RequestParser,
        answered: list[bool],
    ) -> None:
        while data := await reader.read(CHUNK):
            if answered[0]:
                self.round_trips += 1
                answered[0] = False
            self.commands.update(parser.feed(data))
            writer.write(data)
            await writer.drain()
        raise ConnectionError("client closed")

    async def _replies(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answered: list[bool]
    ) -> None:
        while data := await reader.read(CHUNK):
            answered[0] = True
            writer.write(data)
            await writer.drain()
        raise ConnectionError("redis closed")
