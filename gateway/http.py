"""The HTTP API: conversations, their events, actions and owner queries, health and
readiness."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker import metrics
from broker.errors import (
    BadRequest,
    FleetError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from broker.names import valid_conversation_id
from broker.overview import read_overview
from broker.ratelimit import RateLimiter
from broker.tokens import Verifier
from gateway import pages
from gateway.operations import MAX_PAGE, Operations

log = structlog.get_logger()

Handler = Callable[[Request], Awaitable[Response]]


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def raw_events(entries: list[bytes]) -> Response:
    """``{"events": [...]}`` built from the logged JSON as is, without decoding it."""
    return Response(b'{"events":[' + b",".join(entries) + b"]}", media_type="application/json")


def error(exc: FleetError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, PayloadTooLarge):
        headers["Connection"] = "close"  # not reading (nor keeping) the rest of the body
    return ORJSONResponse(
        {"ok": False, "error": exc.as_dict()}, status_code=exc.status, headers=headers
    )


async def route_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the API's JSON error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
    detail = exc.detail if isinstance(exc, HTTPException) else "error"
    return ORJSONResponse({"ok": False, "error": {"code": code, "message": detail}}, status)


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


class HttpApi:
    """Routes of the HTTP API; every ``/api`` route needs a bearer token."""

    def __init__(
        self,
        operations: Operations,
        verifier: Verifier,
        max_payload: int,
        is_ready: Callable[[], Awaitable[bool]],
        rates: RateLimiter,
    ) -> None:
        self._operations = operations
        self._verifier = verifier
        self._max_payload = max_payload
        self._is_ready = is_ready
        self._rates = rates

    def routes(self) -> list[Route]:
        api = self._api
        return [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics),
            Route("/", pages.home),
            Route("/docs", pages.docs),
            Route("/openapi.json", pages.openapi),
            Route("/dashboard", pages.dashboard),
            Route("/api/conversations", api(self.create, admits=True), methods=["POST"]),
            Route("/api/conversations", api(self.list), methods=["GET"]),
            Route("/api/conversations/{cid}", api(self.get), methods=["GET"]),
            Route("/api/conversations/{cid}/events", api(self.events), methods=["GET"]),
            Route("/api/conversations/{cid}/actions", api(self.act, admits=True), methods=["POST"]),
            Route(
                "/api/conversations/{cid}/completions",
                api(self.complete, admits=True),
                methods=["POST"],
            ),
            Route("/api/conversations/{cid}", api(self.close), methods=["DELETE"]),
            Route("/api/admin/fleet", api(self.fleet, admin=True), methods=["GET"]),
            Route(
                "/api/admin/conversations/{cid}/events",
                api(self.any_events, admin=True),
                methods=["GET"],
            ),
            Route(
                "/api/admin/conversations/{cid}/stream",
                api(self.any_stream, admin=True),
                methods=["GET"],
            ),
        ]

    def _api(
        self,
        handler: Callable[[Request, str], Awaitable[Response]],
        admits: bool = False,
        admin: bool = False,
    ) -> Handler:
        """Authenticate (``admin``: an admin token only), count against the user's rate
        (``admits``: the admission does), run, and turn domain errors into JSON errors
        (logged once)."""

        async def endpoint(request: Request) -> Response:
            try:
                header = request.headers.get("authorization", "")
                scheme, _, token = header.partition(" ")
                identity = await self._verifier.verify(
                    token if scheme.lower() == "bearer" else None
                )
                if admin and not identity.admin:
                    raise Forbidden("this needs an admin token")
                user = identity.user
                if not admits:
                    await self._rates.take(user)
                return await handler(request, user)
            except FleetError as exc:
                log.info(
                    "request_refused", path=request.url.path, code=exc.code, reason=exc.message
                )
                metrics.REFUSALS.labels(exc.code).inc()
                return error(exc)
            except Exception:
                log.exception("request_failed", path=request.url.path)
                metrics.REFUSALS.labels(Unavailable.code).inc()
                return error(Unavailable("the request could not be completed; retry"))

        return endpoint

    async def _json_body(self, request: Request) -> Any:
        """The JSON body, read no further than the limit (refused up front when its
        Content-Length says it is too large)."""
        too_large = PayloadTooLarge(f"the body is over the limit of {self._max_payload} bytes")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_payload:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_payload:
                raise too_large
        if not body:
            return {}
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("body must be JSON") from None

    async def healthz(self, request: Request) -> Response:
        return ORJSONResponse({"ok": True})

    async def readyz(self, request: Request) -> Response:
        ready = await self._is_ready()
        return ORJSONResponse({"ok": ready}, status_code=200 if ready else 503)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(metrics.GATEWAY), media_type=CONTENT_TYPE_LATEST)

    async def create(self, request: Request, user: str) -> Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("body must be an object")
        initial = body.get("initial_message")
        if initial is not None and not isinstance(initial, str):
            raise BadRequest("initial_message must be a string")
        cid = await self._operations.create(
            user, initial, body.get("on_busy"), body.get("callback_url")
        )
        return ORJSONResponse({"conversation_id": cid}, status_code=201)

    async def list(self, request: Request, user: str) -> Response:
        after = request.query_params.get("after")
        limit = int_param(request, "limit", 100, 1, MAX_PAGE)
        records = await self._operations.list_page(user, after, limit)
        return ORJSONResponse({"conversations": [r.to_dict() for r in records]})

    async def get(self, request: Request, user: str) -> Response:
        record = await self._operations.get(user, request.path_params["cid"])
        return ORJSONResponse(record.to_dict())

    async def events(self, request: Request, user: str) -> Response:
        after = int_param(request, "after", -1, -1, 2**62)
        limit = int_param(request, "limit", MAX_PAGE, 1, MAX_PAGE)
        cid = request.path_params["cid"]
        return raw_events(await self._operations.events(user, cid, after, limit))

    async def act(self, request: Request, user: str) -> Response:
        cid = await self._operations.authorize(user, request.path_params["cid"])
        action_id = await self._operations.act(user, cid, await self._json_body(request))
        return ORJSONResponse({"ok": True, "action_id": action_id})

    async def complete(self, request: Request, user: str) -> Response:
        cid = await self._operations.authorize(user, request.path_params["cid"])
        content = await self._operations.complete(user, cid, await self._json_body(request))
        return ORJSONResponse({"content": content})

    async def close(self, request: Request, user: str) -> Response:
        await self._operations.close(user, request.path_params["cid"])
        return ORJSONResponse({"ok": True}, status_code=202)

    # --- the dashboard's reads (admin tokens only): any user's conversations ----------
    async def fleet(self, request: Request, user: str) -> Response:
        store = self._operations.store
        return ORJSONResponse((await read_overview(store.redis, store.names)).to_dict())

    async def any_events(self, request: Request, user: str) -> Response:
        cid = await self._any_conversation(request)
        after = int_param(request, "after", -1, -1, 2**62)
        limit = int_param(request, "limit", MAX_PAGE, 1, MAX_PAGE)
        return raw_events(await self._operations.store.read(cid, after, limit))

    async def any_stream(self, request: Request, user: str) -> Response:
        """The step being streamed now, as one frame holding its text so far (or null)."""
        frame = await self._operations.store.streaming(await self._any_conversation(request))
        return ORJSONResponse({"stream": frame.to_client() if frame is not None else None})

    async def _any_conversation(self, request: Request) -> str:
        cid = request.path_params["cid"]
        if not valid_conversation_id(cid) or await self._operations.store.owner_of(cid) is None:
            raise NotFound("no such conversation")
        return str(cid)
