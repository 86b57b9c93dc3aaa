"""The gateway process: python-socketio and the HTTP API on one ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib

import socketio
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from broker import metrics
from broker.amqp import Broker
from broker.lifecycle import process_id
from broker.liveness import Liveness
from broker.names import Names
from broker.presence import Presence
from broker.redis import connect
from broker.settings import Settings
from broker.store import Store
from gateway.feed import Feed
from gateway.http import HttpApi, route_error
from gateway.operations import Operations
from gateway.ratelimit import Buckets
from gateway.sockets import FleetNamespace

log = structlog.get_logger()

# Gateways declare every new conversation's queue: on a few channels, in parallel.
DECLARING_CHANNELS = 4


class Gateway:
    """Owns the gateway's connections and its ASGI app; ``run`` serves it with uvicorn."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.gateway_id = process_id()
        secret = settings.require_jwt_secret()
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins="*",
            # Oversized actions must reach the handler to get a clear error, so the
            # transport limit sits well above the action limit.
            max_http_buffer_size=4 * settings.max_payload_bytes,
        )
        self.redis = connect(settings.redis_url)
        self.broker = Broker(
            settings.amqp_url, self.names, name="gateway", channels=DECLARING_CHANNELS
        )
        self.liveness = Liveness(self.redis, self.names, "gateway")
        self.presence = Presence(self.redis, self.names, self.gateway_id)
        store = Store(self.redis, self.names)
        operations = Operations(store, self.broker, settings)
        self.feed = Feed(self.broker, store, self._emit)
        buckets = Buckets(settings.rate_limit, settings.rate_burst)
        self.sockets = FleetNamespace(operations, self.feed, secret, self.presence, buckets)
        self.sio.register_namespace(self.sockets)
        http = HttpApi(operations, secret, settings.max_payload_bytes, self.is_ready, buckets)
        self.app = socketio.ASGIApp(
            self.sio,
            other_asgi_app=Starlette(
                routes=http.routes(), exception_handlers={HTTPException: route_error}
            ),
            on_startup=self.start,
            on_shutdown=self.close,
        )
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.broker.connect()
        await self.feed.start()
        ttl = self.settings.gateway_liveness_ttl
        await self.liveness.heartbeat(self.gateway_id, ttl, register=True)
        self._heartbeat = asyncio.create_task(self._beat())
        log.info("gateway_started", host=self.settings.host, port=self.settings.port)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        try:
            await self.liveness.forget(self.gateway_id, leaving=True)
        except Exception as exc:  # the reaper forgets us after our TTL instead
            log.warning("presence_not_cleared", error=repr(exc))
        await self.feed.close()
        await self.broker.close()
        await self.redis.aclose()
        log.info("gateway_stopped")

    async def _beat(self) -> None:
        """Renew liveness; if it lapsed (and our connections were forgotten), recount them."""
        ttl = self.settings.gateway_liveness_ttl
        while True:
            await asyncio.sleep(ttl / 4)
            try:
                if not await self.liveness.heartbeat(self.gateway_id, ttl):
                    await self.liveness.heartbeat(self.gateway_id, ttl, register=True)
                    for cid in self.sockets.conversations():
                        await self.presence.joined(cid)
                    log.warning("gateway_presence_restored", gateway_id=self.gateway_id)
            except Exception as exc:
                log.warning("gateway_heartbeat_failed", error=repr(exc))

    async def _emit(self, sid: str, event: dict[str, object]) -> None:
        await self.sio.emit("event", event, to=sid)
        metrics.EVENTS_DELIVERED.inc()

    async def is_ready(self) -> bool:
        """Redis answers and the AMQP connection is open."""
        try:
            async with asyncio.timeout(2):
                await self.redis.ping()
        except Exception:
            return False
        return self.broker.is_open

    def run(self) -> None:
        uvicorn.run(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
