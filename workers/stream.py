"""Streamed text of one conversation, coalesced: at most one frame per interval.

A turn streaming 50 deltas a second costs at most 1 / interval broker messages and
as many small Redis writes (the snapshot a client joining mid-step catches up from).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

import structlog

from broker.events import StreamFrame

log = structlog.get_logger()

# The default coalescing interval: at most 20 frames a second per conversation.
INTERVAL = 0.05


class FrameSink(Protocol):
    """Where frames go (``workers.scribe.Scribe``: the step's snapshot, then the broker)."""

    @property
    def conversation_id(self) -> str: ...

    async def stream(self, frame: StreamFrame) -> None: ...


class Streamer:
    """Buffers deltas of the step being made; flushes them as one frame per interval."""

    def __init__(self, scribe: FrameSink, epoch: int, interval: float = INTERVAL) -> None:
        self._scribe = scribe
        self._epoch = epoch
        self._interval = interval
        self._key: tuple[str, int] | None = None  # (turn_id, step) being streamed
        self._seq = -1
        self._pending: list[str] = []
        self._flusher: asyncio.Task[None] | None = None
        self._due = asyncio.Event()  # the step ends: the flusher sends at once

    def add(self, turn_id: str, step: int, delta: str) -> None:
        """Buffer ``delta`` of a step; a frame goes out within the interval."""
        if not delta:
            return
        if self._key != (turn_id, step):
            self._pending.clear()
            self._key, self._seq = (turn_id, step), -1
        self._pending.append(delta)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._interval):
                await self._due.wait()
        try:
            await self.flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the logged step is the record; a frame is best effort
            log.warning("stream_flush_failed", error=repr(exc))

    async def flush(self) -> None:
        """Send what is buffered now, as one frame."""
        if not self._pending or self._key is None:
            return
        delta, self._pending = "".join(self._pending), []
        self._seq += 1
        turn_id, step = self._key
        frame = StreamFrame(
            self._scribe.conversation_id, turn_id, self._epoch, step, self._seq, delta, time.time()
        )
        await self._scribe.stream(frame)

    async def end_step(self) -> None:
        """The step is about to be logged: send what is buffered, then start over.

        The flusher is hurried, not cancelled: cut short while sending, it would drop
        the frame it took from the buffer (a gap in ``seq``, text the client never sees).
        """
        if self._flusher is not None and not self._flusher.done():
            self._due.set()
            await self._flusher
            self._due.clear()
        await self.flush()
        self._key, self._seq = None, -1

    async def close(self) -> None:
        """Drop what is buffered (the turn was cut short) and stop."""
        self._pending.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
