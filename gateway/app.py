"""The gateway process: python-socketio and the HTTP API on one ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import socketio
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from broker import metrics
from broker.amqp import Broker
from broker.archive import archive_for
from broker.events import ProcessInfo
from broker.lifecycle import Service, cancel_all, process_id
from broker.liveness import Liveness
from broker.presence import Presence
from broker.ratelimit import RateLimiter
from broker.redis import connect
from broker.settings import Settings
from broker.store import Store
from broker.tokens import Verifier
from gateway.feed import ClientGone, Feed
from gateway.http import HttpApi, route_error
from gateway.operations import Operations
from gateway.outbox import Outbox, TooSlow
from gateway.protocol import CoalescedWebSocket, with_header_timeout
from gateway.sockets import FleetNamespace, FleetPacket, FleetServer, PacketJson

log = structlog.get_logger()

# Gateways declare every new conversation's queue: on a few channels, in parallel.
DECLARING_CHANNELS = 4
# Seconds each dependency has to answer a readiness probe's round trip.
READY_TIMEOUT = 2.0


class Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers of its own (the gateway's lifecycle owns them),
    telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class Gateway(Service):
    """Owns the gateway's connections and its ASGI app, served by uvicorn until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.settings = settings
        self.names = settings.names
        self.gateway_id = process_id()
        self._started_at = time.time()
        verifier = Verifier.from_settings(settings)
        origins = settings.cors_origins
        self.sio = FleetServer(
            async_mode="asgi",
            # None: same-origin pages only (and clients that send no Origin).
            cors_allowed_origins="*" if origins == ["*"] else origins or None,
            # Oversized actions must reach the handler to get a clear error, so the
            # transport limit sits well above the action limit.
            max_http_buffer_size=4 * settings.max_payload_bytes,
            serializer=FleetPacket,
            json=PacketJson,
        )
        self.outbox = Outbox(self.sio, settings.slow_client_timeout)
        self.redis = connect(settings.redis_url, settings.redis_cluster)
        self.archive = archive_for(settings)  # archived history, for replay and paging
        store = Store(self.redis, self.names, self.archive)
        self.broker = Broker(
            settings.amqp_url,
            self.names,
            name="gateway",
            channels=DECLARING_CHANNELS,
            reopen=store.may_reopen,
            publish_timeout=settings.publish_timeout,
            queue_type=settings.queue_type,
        )
        self.liveness = Liveness(self.redis, self.names, "gateway")
        self.presence = Presence(
            self.redis, self.names, self.gateway_id, settings.max_connections_per_user
        )
        operations = Operations(store, self.broker, settings)
        self.feed = Feed(self.broker, store, self._emit)
        rates = RateLimiter(self.redis, self.names, operations.limits.rate)
        self.sockets = FleetNamespace(operations, self.feed, verifier, self.presence, self.outbox)
        self.sio.register_namespace(self.sockets)
        http = HttpApi(operations, verifier, settings.max_payload_bytes, self.is_ready, rates)
        cors = Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
        self.app = socketio.ASGIApp(
            self.sio,
            other_asgi_app=Starlette(
                routes=http.routes(),
                middleware=[cors],
                exception_handlers={HTTPException: route_error},
            ),
        )
        self.server = Uvicorn(
            uvicorn.Config(
                self.app,
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
                http=with_header_timeout(settings.header_timeout),
                ws=CoalescedWebSocket,
            )
        )

    async def serve(self) -> None:
        """Reach Redis and RabbitMQ, then serve until stopped."""
        try:
            if await self.connect(self.redis, self.broker, self.archive):
                await self._serve()
        finally:
            if self.archive is not None:
                await self.archive.close()
            await self.broker.close()
            await self.redis.aclose()
        log.info("gateway_stopped")

    async def _serve(self) -> None:
        await self.feed.start()
        await self.broker.listen_answers()
        ttl = self.settings.gateway_liveness_ttl
        await self.liveness.heartbeat(self.gateway_id, ttl, register=True, info=self.info())
        heartbeat = asyncio.create_task(self._beat())
        serving = asyncio.create_task(self.server.serve())
        listening = asyncio.ensure_future(self.server.listening.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([listening, stopping, serving], return_when=asyncio.FIRST_COMPLETED)
            if self.server.started and not self._stop.is_set():
                log.info("gateway_started", host=self.settings.host, port=self.settings.port)
                self.serving()
                await asyncio.wait([stopping, serving], return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
            stopping.cancel()
            self.server.should_exit = True
            await serving
            await cancel_all([heartbeat])
            try:
                await self.liveness.forget(self.gateway_id, leaving=True)
            except Exception as exc:  # the reaper forgets us after our TTL instead
                log.warning("presence_not_cleared", error=repr(exc))
            await self.feed.close()

    async def _beat(self) -> None:
        """Renew liveness; if it lapsed (and our connections were forgotten), recount them."""
        ttl = self.settings.gateway_liveness_ttl
        while True:
            await asyncio.sleep(ttl / 4)
            failure: Exception | None = None
            try:
                if not await self.liveness.heartbeat(self.gateway_id, ttl):
                    await self.liveness.heartbeat(
                        self.gateway_id, ttl, register=True, info=self.info()
                    )
                    for user, cid in self.sockets.sessions():
                        await self.presence.joined(cid, user, enforce=False)
                    log.warning("gateway_presence_restored", gateway_id=self.gateway_id)
            except Exception as exc:
                failure = exc
            if not self.watch(self.broker, failure):
                return

    def info(self) -> ProcessInfo:
        """This gateway, as ``fleet status`` shows it (its connections are counted in
        its presence index)."""
        return ProcessInfo(
            role="gateway",
            process_id=self.gateway_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            address=f"{self.settings.host}:{self.settings.port}",
        )

    async def _emit(self, sid: str, name: str, payload: dict[str, Any]) -> None:
        try:
            await self.outbox.room(sid)
        except TooSlow as exc:
            log.warning("client_too_slow", sid=sid, reason=str(exc))
            message = f"disconnected: {exc}; reconnect with latest_event_id to resume"
            await self.sio.emit("error", {"code": "too_slow", "message": message}, to=sid)
            await self.sio.disconnect(sid)
            raise ClientGone(str(exc)) from None
        await self.sio.emit_to(sid, name, payload)
        (metrics.FRAMES_DELIVERED if name == "stream" else metrics.EVENTS_DELIVERED).inc()

    async def is_ready(self) -> bool:
        """Redis and RabbitMQ each answer a round trip in time."""
        if not self.broker.is_open:
            return False
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.redis.ping()
            async with asyncio.timeout(READY_TIMEOUT):
                await self.broker.ping()
        except Exception:
            return False
        return True
