"""How much a client may have waiting in its transport before the gateway waits for it.

Engine.IO queues every packet for a client until its transport takes them: a
websocket writer sends them as fast as the client reads, a long-polling client
takes everything queued in one response (and python-engineio refuses a response of
more than 16 packets). So the gateway sends a client at most a window of packets
ahead of what its transport took, and a client that takes nothing for
``stall_timeout`` seconds is disconnected (it resumes with ``latest_event_id``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

# Polling: well under python-engineio's 16 packets per response, leaving room for
# pings and acks. Websocket: enough to keep the pipe full.
POLLING_WINDOW = 8
WEBSOCKET_WINDOW = 64


class TooSlow(Exception):
    """The client took nothing from its transport for too long."""


class Outbox:
    """Waits for room in a client's Engine.IO queue before the next packet."""

    def __init__(self, sio: socketio.AsyncServer, stall_timeout: float) -> None:
        self._sio = sio
        self.stall_timeout = stall_timeout

    async def room(self, sid: str) -> None:
        """Return once ``sid``'s transport has room; ``TooSlow`` if it stays full."""
        socket = self._socket(sid)
        if socket is None:
            return  # gone: emitting to it is a no-op
        window = WEBSOCKET_WINDOW if socket.upgraded else POLLING_WINDOW
        if socket.queue.qsize() < window:
            return
        try:
            # Every packet ``get`` from the queue is marked done: join() returns once
            # the transport took everything queued so far.
            await asyncio.wait_for(socket.queue.join(), self.stall_timeout)
        except TimeoutError:
            raise TooSlow(f"nothing read for {self.stall_timeout:g} s") from None

    def wake(self, sid: str) -> None:
        """End a departing client's pending long-poll now: Engine.IO would hold it until
        the ping timeout (30 s), and the client's disconnect waits for it."""
        socket = self._socket(sid)
        if socket is not None and not socket.upgraded:
            socket.queue.put_nowait(None)

    def _socket(self, sid: str) -> Any:
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, "/")
        return self._sio.eio.sockets.get(eio_sid) if eio_sid is not None else None
