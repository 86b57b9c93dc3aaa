"""Sending one reply over one HTTP exchange (an error, a ``chat.completion`` or its SSE
stream) at the reply's pace, and seeing the moment the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from types import TracebackType

import orjson
from starlette.types import Receive, Send

from fleet.fake_llm.chat import ChatRequest
from fleet.fake_llm.journal import Exchange
from fleet.fake_llm.script import Reply, ScriptedError
from fleet.fake_llm.wire import DONE, JSON, SSE_HEADERS, Completion, sse

Headers = list[tuple[bytes, bytes]]
# OpenAI asks a rate-limited client to wait about this long.
RATE_LIMIT_RETRY_AFTER = 1.0


class DropConnection(Exception):
    """Raised mid-response on purpose (``fail_after``): uvicorn then closes the socket
    without finishing the response, as a crashed or cut-off server would."""


class Channel:
    """One exchange's ASGI ``send``, and a watch on its ``receive`` that records the
    client's disconnect when it happens, even while nothing is being sent."""

    def __init__(self, receive: Receive, send: Send, exchange: Exchange) -> None:
        self.exchange = exchange
        self.gone = asyncio.Event()
        self._receive = receive
        self._send = send
        self._finishing = False
        self._watch: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Channel:
        self._watch = asyncio.create_task(self._watch_disconnect())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _watch_disconnect(self) -> None:
        # The body was read already: the next message is the disconnect (uvicorn also
        # says "disconnect" once the response is complete, which is not the client's doing).
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._finishing:
            self.exchange.disconnected_at = time.time()
        self.gone.set()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the client has gone away."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gone.wait(), seconds)
        else:
            await asyncio.sleep(0)  # lets the watch see a disconnect that already happened
        return not self.gone.is_set()

    async def start(self, status: int, headers: Headers) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        self.exchange.status = status

    async def send(self, body: bytes, last: bool = False) -> None:
        self._finishing = last
        await self._send({"type": "http.response.body", "body": body, "more_body": not last})
        self.exchange.completed = last


def _json_headers(body: bytes) -> Headers:
    return [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]


async def send_json(channel: Channel, status: int, content: object, headers: Headers) -> None:
    body = orjson.dumps(content)
    await channel.start(status, [*_json_headers(body), *headers])
    await channel.send(body, last=True)


async def answer(channel: Channel, request: ChatRequest, reply: Reply) -> None:
    """Send ``reply`` as the answer to ``request``; stop early if the client goes away."""
    if not await channel.pause(reply.hang):
        return
    if reply.status is not None:
        await _error(channel, reply.status, reply)
    elif request.stream:
        await _stream(channel, request, reply)
    else:
        await _complete(channel, request, reply)


async def _error(channel: Channel, status: int, reply: Reply) -> None:
    limited = status == 429
    wait = RATE_LIMIT_RETRY_AFTER if limited else None
    if reply.retry_after is not None:
        wait = reply.retry_after
    headers: Headers = []
    if wait is not None:
        # Whole seconds for HTTP; the SDK prefers the exact milliseconds.
        headers = [
            (b"retry-after", str(math.ceil(wait)).encode()),
            (b"retry-after-ms", str(round(wait * 1000)).encode()),
        ]
    await send_json(channel, status, {"error": _error_fields(status, reply.error)}, headers)


def _error_fields(status: int, given: ScriptedError | None) -> dict[str, str | None]:
    """The scripted error's fields, what it leaves out filled in as OpenAI would."""
    given = given or ScriptedError()
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    else:
        kind, code = ("server_error" if status >= 500 else "invalid_request_error"), None
    return {
        "message": given.message or f"fake-llm: scripted error {status}",
        "type": given.type or kind,
        "code": given.code or code,
        "param": given.param,
    }


async def _complete(channel: Channel, request: ChatRequest, reply: Reply) -> None:
    if not await channel.pause(reply.first_delay):
        return
    body = orjson.dumps(Completion.of(request, reply).to_object())
    await channel.start(200, _json_headers(body))
    if reply.fail_after is not None:
        raise DropConnection("fail_after: dropped after the headers")
    await channel.send(body, last=True)


async def _stream(channel: Channel, request: ChatRequest, reply: Reply) -> None:
    events = Completion.of(request, reply).chunks(reply.chunk, request.include_usage)
    await channel.start(200, SSE_HEADERS)
    pause = reply.first_delay
    for event in events:
        if not await channel.pause(pause):
            return
        if channel.exchange.chunks_sent == reply.fail_after:
            raise DropConnection(f"fail_after: dropped after {reply.fail_after} chunks")
        await channel.send(sse(event))
        channel.exchange.chunks_sent += 1
        pause = reply.delay
    if reply.fail_after is not None:
        raise DropConnection("fail_after: dropped before [DONE]")
    await channel.send(DONE, last=True)
