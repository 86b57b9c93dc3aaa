"""One Socket.IO connection to one gateway, for one conversation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

from broker.events import Ack, Refusal, StreamFrame, client_event, client_frame
from broker.events import Event as LoggedEvent

# Refusals that a retry, here or on another gateway, may get past.
TRANSIENT = frozenset({"too_many_connections", "unavailable", "rate_limited"})
# Steps remembered per connection: one streams at a time, and old ones do not return.
STREAMED_REMEMBERED = 64


class ConnectionRefused(Exception):
    """The gateway refused the connection for good (a bad token, an unknown
    conversation, ...): ``code`` and ``message`` as the protocol says."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LinkLost(Exception):
    """The connection ended before an acknowledgement came."""


class Link:
    """A connection whose events and frames go to callbacks, in the order received
    (the handlers are synchronous, so python-socketio's per-message tasks run them
    in arrival order); ``gone`` is set once it is over, whoever ended it."""

    def __init__(
        self,
        url: str,
        on_event: Callable[[LoggedEvent], None],
        on_frame: Callable[[StreamFrame, bool], None],
    ) -> None:
        self.url = url
        self.gone = asyncio.Event()
        self.ready = False  # connected (and not gone, unless ``gone`` is set)
        self._on_event = on_event
        self._on_frame = on_frame
        self._streamed: dict[tuple[str, int, int], None] = {}  # (turn, epoch, step) seen here
        self._refusal: Refusal | None = None
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("event", self._event)
        self.sio.on("stream", self._frame)
        self.sio.on("connect_error", self._connect_error)
        self.sio.on("disconnect", self._disconnected)

    async def open(self, auth: dict[str, Any], transports: list[str], timeout: float) -> None:
        """Connect; ``ConnectionRefused`` when the gateway said no, ``OSError``-like
        ``socketio.exceptions.ConnectionError`` when it could not be reached."""
        try:
            await self.sio.connect(self.url, auth=auth, transports=transports, wait_timeout=timeout)
        except BaseException as exc:
            await self.close()  # the HTTP session of a failed (or cancelled) attempt too
            refused = isinstance(exc, socketio.exceptions.ConnectionError) and self._refusal
            if refused:
                raise ConnectionRefused(refused.code, refused.message) from None
            raise
        self.ready = True

    async def call(self, payload: dict[str, Any], timeout: float) -> Ack:
        """Send a ``user_action`` and wait for its ack; ``LinkLost`` if the connection
        ends first, ``TimeoutError`` if no ack comes in time."""
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def ack(*args: Any) -> None:
            if not answered.done():
                answered.set_result(args[0] if args else None)

        try:
            await self.sio.emit("user_action", payload, callback=ack)
        except socketio.exceptions.SocketIOError as exc:
            self.gone.set()  # not connected any more, whatever the handlers heard yet
            raise LinkLost(str(exc)) from None
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await asyncio.wait({answered, gone}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            gone.cancel()
        if answered.done():
            return Ack.from_wire(answered.result(), payload["action_id"])
        answered.cancel()
        if self.gone.is_set():
            raise LinkLost(f"connection to {self.url} ended")
        raise TimeoutError(f"no acknowledgement from {self.url} within {timeout} s")

    async def close(self) -> None:
        try:
            await self.sio.disconnect()
        finally:
            self.gone.set()

    def _event(self, payload: dict[str, Any]) -> None:
        self._on_event(client_event(payload))

    def _frame(self, payload: dict[str, Any]) -> None:
        frame = client_frame(payload)
        key = (frame.turn_id, frame.epoch, frame.step)
        fresh = key not in self._streamed
        if fresh:
            self._streamed[key] = None
            if len(self._streamed) > STREAMED_REMEMBERED:
                del self._streamed[next(iter(self._streamed))]
        self._on_frame(frame, fresh)

    def _connect_error(self, data: object = None) -> None:
        detail = data.get("data") if isinstance(data, dict) else None
        if isinstance(detail, dict) and isinstance(detail.get("code"), str):
            self._refusal = Refusal(detail["code"], str(detail.get("message", "")))

    def _disconnected(self, *reason: object) -> None:
        self.gone.set()
