"""The gateway process: python-socketio and the HTTP API on one ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
import structlog
import uvicorn
from starlette.applications import Starlette

from broker.amqp import Broker
from broker.leases import Leases
from broker.names import Names
from broker.redis import connect
from broker.settings import Settings
from broker.store import Store
from gateway.feed import Feed
from gateway.http import HttpApi
from gateway.service import Conversations
from gateway.sockets import FleetNamespace

log = structlog.get_logger()


class Gateway:
    """Owns the gateway's connections and its ASGI app; ``run`` serves it with uvicorn."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        secret = settings.require_jwt_secret()
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            cors_allowed_origins="*",
            # Oversized actions must reach the handler to get a clear error, so the
            # transport limit sits well above the action limit.
            max_http_buffer_size=4 * settings.max_payload_bytes,
        )
        self.redis = connect(settings.redis_url)
        self.store = Store(self.redis, self.names)
        self.broker = Broker(settings.amqp_url, self.names, name="gateway")
        limit = settings.max_payload_bytes
        conversations = Conversations(
            self.store, Leases(self.redis, self.names), self.broker, limit
        )
        self.feed = Feed(self.broker, self.store, self._emit)
        self.sio.register_namespace(FleetNamespace(conversations, self.feed, secret))
        http = HttpApi(conversations, secret, limit, self.ready)
        self.app = socketio.ASGIApp(
            self.sio,
            other_asgi_app=Starlette(routes=http.routes()),
            on_startup=self.start,
            on_shutdown=self.close,
        )

    async def start(self) -> None:
        await self.broker.connect()
        await self.feed.start()
        log.info("gateway_started", host=self.settings.host, port=self.settings.port)

    async def close(self) -> None:
        await self.feed.close()
        await self.broker.close()
        await self.redis.aclose()
        log.info("gateway_stopped")

    async def _emit(self, sid: str, event: dict[str, Any]) -> None:
        await self.sio.emit("event", event, to=sid)

    async def ready(self) -> bool:
        """Redis answers and the AMQP connection is open."""
        try:
            async with asyncio.timeout(2):
                await self.redis.ping()
        except Exception:
            return False
        return not self.broker.connection.is_closed

    def run(self) -> None:
        uvicorn.run(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
