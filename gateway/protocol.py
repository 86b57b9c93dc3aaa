"""uvicorn's protocols, adjusted: a deadline for request headers, and websocket
frames written once per loop turn.

uvicorn closes idle keep-alive connections, but a client that sends part of its
headers and then nothing is held forever (a slowloris). Here each request's headers
must be complete within ``timeout`` seconds of its first byte (or of the connection).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from broker.coalesce import CoalescedTransport


class CoalescedWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, sending the frames of one loop turn in one write: a
    client's acks and the events of a batch, emitted one by one, leave together."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(CoalescedTransport(transport))


def with_header_timeout(timeout: float) -> type[HttpToolsProtocol]:
    """``HttpToolsProtocol`` closing a connection whose headers take over ``timeout`` s."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
