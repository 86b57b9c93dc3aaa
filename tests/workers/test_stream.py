"""The streamer's frames when a step ends while one is being sent: every delta goes
out, in order, with no gap in ``seq``, before the step is logged."""

from __future__ import annotations

import asyncio

from broker.events import StreamFrame
from workers.stream import Streamer


class GatedSink:
    """Takes frames, each only once ``gate`` opens; ``sending`` tells one is held."""

    conversation_id = "c-1"

    def __init__(self) -> None:
        self.frames: list[StreamFrame] = []
        self.sending = asyncio.Event()
        self.gate = asyncio.Event()

    async def stream(self, frame: StreamFrame) -> None:
        self.sending.set()
        await self.gate.wait()
        self.frames.append(frame)


async def test_a_frame_being_sent_as_the_step_ends_still_goes_out() -> None:
    sink = GatedSink()
    streamer = Streamer(sink, epoch=7, interval=0.01)
    streamer.add("t-1", 0, "w0 ")
    async with asyncio.timeout(5):
        await sink.sending.wait()  # the coalescing flusher took "w0 " and is sending it
    streamer.add("t-1", 0, "w1")
    ending = asyncio.create_task(streamer.end_step())
    sink.gate.set()
    async with asyncio.timeout(5):
        await ending
    assert [(f.turn_id, f.epoch, f.seq, f.delta) for f in sink.frames] == [
        ("t-1", 7, 0, "w0 "),
        ("t-1", 7, 1, "w1"),
    ]
