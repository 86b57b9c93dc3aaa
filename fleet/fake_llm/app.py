"""The fake's HTTP surface: OpenAI's ``/v1/chat/completions`` and ``/v1/models``, and
``/fake/*`` for tests to script its replies and see what it was asked."""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from fleet.fake_llm.answer import Channel, answer, send_json
from fleet.fake_llm.chat import parse_request
from fleet.fake_llm.errors import InvalidRequest, error_body
from fleet.fake_llm.journal import Exchange, Journal
from fleet.fake_llm.script import Scripts, parse_script

log = structlog.get_logger()

MODEL = "fleet-fake"  # listed by /v1/models; requests may name any model


class ChatCompletions:
    """``POST /v1/chat/completions`` as a plain ASGI app: it must see the client's
    disconnect and may drop the connection, which a request/response handler cannot."""

    def __init__(self, scripts: Scripts, journal: Journal, pace: float) -> None:
        self.scripts = scripts
        self.journal = journal
        self.pace = pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await Request(scope, receive).body()
        exchange = self.journal.open(raw)
        try:
            async with Channel(receive, send, exchange) as channel:
                await self._answer(channel, raw)
        finally:
            exchange.finished_at = time.time()
            _log(exchange, exchange.finished_at - exchange.received_at)

    async def _answer(self, channel: Channel, raw: bytes) -> None:
        try:
            request = parse_request(raw)
        except InvalidRequest as exc:
            channel.exchange.error = exc.message
            await send_json(channel, 400, exc.body(), [])
            return
        pick = self.scripts.pick(request, self.pace)
        channel.exchange.answered_by(pick)
        await answer(channel, request, pick.reply)


def _log(exchange: Exchange, seconds: float) -> None:
    body = exchange.body if isinstance(exchange.body, dict) else {}
    log.info(
        "chat_completion",
        request_id=exchange.id,
        model=body.get("model"),
        stream=body.get("stream", False),
        script_id=exchange.script_id,
        status=exchange.status,
        chunks=exchange.chunks_sent,
        completed=exchange.completed,
        disconnected=exchange.disconnected,
        seconds=round(seconds, 3),
        error=exchange.error,
    )


class FakeApi:
    """The routes, over one set of scripts and one journal."""

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self.scripts = Scripts()
        self.journal = Journal()
        self.created = int(time.time())

    def app(self) -> Starlette:
        chat = ChatCompletions(self.scripts, self.journal, self.pace)
        routes = [
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/fake/script", self.add_script, methods=["POST"]),
            Route("/fake/script", self.scripts_left, methods=["GET"]),
            Route("/fake/script", self.clear_scripts, methods=["DELETE"]),
            Route("/fake/requests", self.requests, methods=["GET"]),
            Route("/fake/requests", self.clear_requests, methods=["DELETE"]),
            Route("/fake/health", self.health, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: _route_error})

    async def models(self, request: Request) -> Response:
        model = {"id": MODEL, "object": "model", "created": self.created, "owned_by": "fleet"}
        return JSONResponse({"object": "list", "data": [model]})

    async def add_script(self, request: Request) -> Response:
        try:
            new = parse_script(await request.body())
        except InvalidRequest as exc:
            return JSONResponse(exc.body(), 400)
        script = self.scripts.add(new)
        log.info("script_added", script_id=script.id, match=script.match, replies=len(new.replies))
        return JSONResponse(script.to_json(), 201)

    async def scripts_left(self, request: Request) -> Response:
        return JSONResponse({"scripts": [script.to_json() for script in self.scripts.pending()]})

    async def clear_scripts(self, request: Request) -> Response:
        return JSONResponse({"cleared": self.scripts.clear()})

    async def requests(self, request: Request) -> Response:
        exchanges = [exchange.to_json() for exchange in self.journal.exchanges]
        return JSONResponse({"requests": exchanges})

    async def clear_requests(self, request: Request) -> Response:
        return JSONResponse({"cleared": self.journal.clear()})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pace": self.pace})


async def _route_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in OpenAI's error shape too, as OpenAI does."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    body: dict[str, Any] = error_body(f"Invalid URL ({request.method} {request.url.path})")
    return JSONResponse(body, status)
